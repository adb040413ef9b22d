//! Traces: the daemon's `tracing` spans of routing, claims, attempts and outcomes exported as
//! OpenTelemetry spans over OTLP/HTTP (`--otlp-endpoint`), and the W3C trace context
//! (`traceparent`) stored with each invocation, so that an attempt's spans, on whichever node
//! runs it, join the trace of the request or the parent attempt that routed the call.
//!
//! With no endpoint nothing here costs anything: [`enabled`] is false, the orchestrator makes
//! no span of its own for tracing, and an invocation keeps only the `traceparent` its caller
//! sent (passed on to its children unchanged).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::OtlpProtocol;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (a node started with `--otlp-endpoint`).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The running export: spans are batched and sent from the SDK's own thread every
/// `EXPORT_EVERY`; [`Exporter::shutdown`] sends what is left.
pub struct Exporter {
    provider: SdkTracerProvider,
}

/// How often finished spans are sent.
const EXPORT_EVERY: Duration = Duration::from_millis(500);

impl Exporter {
    /// Starts posting spans to `url` (`Config::otlp_traces_url`) as service `warden`, instance
    /// `node`. Call it outside an async runtime: the exporter's blocking HTTP client has one of
    /// its own.
    pub fn start(url: String, protocol: OtlpProtocol, node: &str) -> anyhow::Result<Self> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_protocol(match protocol {
                OtlpProtocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
                OtlpProtocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
            })
            .with_timeout(Duration::from_secs(5))
            .build()?;
        let batches = BatchSpanProcessor::builder(exporter)
            .with_batch_config(BatchConfigBuilder::default().with_scheduled_delay(EXPORT_EVERY).build())
            .build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("warden")
            .with_attribute(opentelemetry::KeyValue::new("service.instance.id", node.to_string()))
            .build();
        let provider = SdkTracerProvider::builder().with_span_processor(batches).with_resource(resource).build();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Self { provider })
    }

    /// The layer that turns `tracing` spans into exported ones.
    pub fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("warden")).with_tracked_inactivity(false)
    }

    /// Sends the spans not sent yet and stops (blocking; outside an async runtime).
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warden: exporting the last spans failed: {e}");
        }
    }
}

/// The remote parent a W3C `traceparent` names, if it is valid.
fn remote(traceparent: &str) -> Option<opentelemetry::Context> {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// `traceparent` if it is a valid W3C trace context (`00-<trace>-<span>-<flags>`); an invalid
/// one is ignored, as the W3C recommendation asks of a receiver.
pub fn valid(traceparent: Option<String>) -> Option<String> {
    traceparent.filter(|t| t.len() <= 256 && remote(t).is_some())
}

/// Makes the span `traceparent` names, if any, the parent of `span` (before `span` is
/// entered); without one, `span` keeps its place (a child of the current span, or a root).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(cx) = traceparent.and_then(remote) {
        let _ = span.set_parent(cx);
    }
}

/// The W3C `traceparent` of `span`, for what it causes elsewhere (stored with the
/// invocations it routes); `None` if the span is not exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Marks `span` as failed (OpenTelemetry's error status) with `message`.
pub fn set_error(span: &tracing::Span, message: &str) {
    span.set_status(opentelemetry::trace::Status::error(message.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_traceparents_are_kept() {
        let ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string();
        assert_eq!(valid(Some(ok.clone())), Some(ok));
        assert_eq!(valid(Some("00-00000000000000000000000000000000-b7ad6b7169203331-01".into())), None);
        assert_eq!(valid(Some("not a trace".into())), None);
        assert_eq!(valid(None), None);
    }
}
