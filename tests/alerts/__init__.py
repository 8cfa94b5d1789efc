"""promtool unit tests of the shipped alert rules, and the PromQL name checks they share."""
