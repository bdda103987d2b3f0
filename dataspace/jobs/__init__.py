"""Partner jobs: data contracts, model uploads, the job state machine, decisions and DP releases."""
