"""The common ground of every room: configuration (:mod:`~runner.common.config`), storage of
local and ``s3://`` locations (:mod:`~runner.common.store`), logs (:mod:`~runner.common.logs`),
progress and heartbeat (:mod:`~runner.common.progress`) and the errors a user sees
(:mod:`~runner.common.errors`)."""
