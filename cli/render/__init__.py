"""What the commands print: tables that fit the terminal, results, status, searches, the plot, and
the HTML report (report)."""
