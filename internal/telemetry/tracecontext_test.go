package telemetry_test

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/checkout-demo/checkout/internal/telemetry"
)

func TestTraceContext(t *testing.T) {
	exp := memory(t, "order")
	t.Run("RoundTrip", func(t *testing.T) {
		ctx, insert := otel.Tracer("x").Start(context.Background(), "insert order")
		s := telemetry.EncodeTraceContext(ctx)
		insert.End()
		if !strings.Contains(s, `"traceparent":"00-`+insert.SpanContext().TraceID().String()) {
			t.Fatalf("encoded %q lacks the traceparent", s)
		}
		if got := telemetry.TraceIDOf(s); got != insert.SpanContext().TraceID().String() {
			t.Errorf("TraceIDOf = %q, want %s", got, insert.SpanContext().TraceID())
		}
		// The relay, later, with a context of its own.
		relayCtx := telemetry.DecodeTraceContext(context.Background(), s)
		_, publish := otel.Tracer("x").Start(relayCtx, "publish")
		publish.End()
		if publish.SpanContext().TraceID() != insert.SpanContext().TraceID() {
			t.Error("the publish is in another trace")
		}
		var parent trace.SpanID
		for _, sp := range exp.GetSpans() {
			if sp.Name == "publish" {
				parent = sp.Parent.SpanID()
			}
		}
		if parent != insert.SpanContext().SpanID() {
			t.Errorf("publish's parent = %s, want the insert span %s", parent, insert.SpanContext().SpanID())
		}
	})
	t.Run("NoSpan", func(t *testing.T) {
		if s := telemetry.EncodeTraceContext(context.Background()); s != "" {
			t.Errorf("encoded %q without a span", s)
		}
		if id := telemetry.TraceID(context.Background()); id != "" {
			t.Errorf("TraceID = %q without a span", id)
		}
	})
	t.Run("Unreadable", func(t *testing.T) {
		for _, s := range []string{"", "{", `{"traceparent":"garbage"}`, `[1]`} {
			ctx := telemetry.DecodeTraceContext(context.Background(), s)
			if trace.SpanContextFromContext(ctx).IsValid() {
				t.Errorf("%q decoded to a span context", s)
			}
		}
	})
}
