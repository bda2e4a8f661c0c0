"""The benchmark suite: `python -m bench renewals|scale|mass-failover|leader-failover`."""
