-- Traces of workflows (issue 17, item 6): the W3C trace context of the workflow's span (a
-- child of the `traceparent` it was created with), which each node's routing span is a child
-- of, so a workflow's attempts are one trace. NULL when nobody traces it.
ALTER TABLE workflows ADD COLUMN trace_parent TEXT;
