-- Traces (issue 17): the W3C trace context (`traceparent`) of what routed the invocation (the
-- request's, or the routing span's when the node exports traces, or the calling attempt's),
-- so that its attempts, on any node, join that trace. NULL when nobody traces it.
ALTER TABLE invocations ADD COLUMN trace_parent TEXT;
