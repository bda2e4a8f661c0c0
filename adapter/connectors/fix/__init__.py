"""The `fix` connector: FIX 4.2, 4.4 and FIXT.1.1 sessions whose state lives behind the fence.

Modules, each owning one thing: `codec` (framing, encoding), `dictionary` (QuickFIX XML
data dictionaries), `store` (fenced sequence numbers and the outbound journal), `bridge`
(the outbox and inbox tables), `states`, `outbound`, `inbound`, `resend` and `session`
(the session protocol on one connection), `metrics`, `connector` (the lifecycle the
pod runtime drives), and `ownerlabel` with `kubeapi` (on Kubernetes, an acceptor's owner
labels its Pod for the chart's Service). Operator documentation: docs/fix.md.
"""
