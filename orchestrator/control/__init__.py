"""From a plan to finished levels: record and submit (controller, submit), follow the disk and the
scheduler (reconcile), rebuild a store from disk (importer), record hydra runs (standalone)."""
