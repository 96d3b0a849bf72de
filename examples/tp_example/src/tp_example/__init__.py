"""An example of a lab's plugin for turboprune: a tiny CNN (models.py), a first-order Taylor
pruning score (criteria.py), a digits-derived data set (data.py), and the declarations of its
methods (methods.py, published as entry points in pyproject.toml).

Nothing is imported here: each level counts only the modules it runs in its code identity
(turboprune's core/code.py), so editing the criterion retrains the Taylor levels alone.
"""
