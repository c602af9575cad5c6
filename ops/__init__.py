"""lottery-ops: the operations runbook of the lottery backend, as Invoke tasks."""
