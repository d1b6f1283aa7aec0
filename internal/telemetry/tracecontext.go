package telemetry

import (
	"context"
	"encoding/json"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// EncodeTraceContext returns the trace context of ctx as a string to store
// beside what it belongs to (the outbox row's trace_context column): a JSON
// object of the W3C fields, {"traceparent":"00-…-01"} (with tracestate and
// baggage when there are any). It is "" when ctx carries no span, so the
// column can stay NULL.
func EncodeTraceContext(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	m := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, m)
	if len(m) == 0 {
		return ""
	}
	b, err := json.Marshal(map[string]string(m))
	if err != nil {
		return ""
	}
	return string(b)
}

// DecodeTraceContext returns ctx carrying the remote trace context that
// EncodeTraceContext wrote into s. A publish started under it is a child of
// the span that wrote the row. An empty or unreadable s leaves ctx as it is.
func DecodeTraceContext(ctx context.Context, s string) context.Context {
	if s == "" {
		return ctx
	}
	m := propagation.MapCarrier{}
	if err := json.Unmarshal([]byte(s), (*map[string]string)(&m)); err != nil {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, m)
}

// TraceIDOf returns the trace id stored in an encoded trace context, or "".
// The order's answer uses it to name the trace its checkout began.
func TraceIDOf(s string) string {
	return TraceID(DecodeTraceContext(context.Background(), s))
}
