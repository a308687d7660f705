"""Analysis: records -> frame -> summary, plots, HTML report, capacity plan."""
