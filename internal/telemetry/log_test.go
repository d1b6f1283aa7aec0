package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel"

	"github.com/checkout-demo/checkout/internal/telemetry"
)

func TestLogHandler(t *testing.T) {
	memory(t, "order")
	var buf bytes.Buffer
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(&buf, nil))).With("service", "order")
	ctx, span := otel.Tracer("x").Start(context.Background(), "op")
	defer span.End()

	lines := func() []map[string]any {
		var out []map[string]any
		dec := json.NewDecoder(&buf)
		for dec.More() {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
		buf.Reset()
		return out
	}

	log.InfoContext(ctx, "with context", "order_id", 1)
	log.WithGroup("g").With("a", 1).InfoContext(ctx, "derived")
	log.Info("without context")
	got := lines()
	if len(got) != 3 {
		t.Fatalf("%d lines", len(got))
	}
	want := span.SpanContext()
	if got[0]["trace_id"] != want.TraceID().String() || got[0]["span_id"] != want.SpanID().String() {
		t.Errorf("line with a context: %v, want trace_id %s span_id %s", got[0], want.TraceID(), want.SpanID())
	}
	if g, _ := got[1]["g"].(map[string]any); g == nil || g["trace_id"] != want.TraceID().String() {
		t.Errorf("derived logger's line lacks the trace id: %v", got[1])
	}
	if _, ok := got[2]["trace_id"]; ok {
		t.Errorf("line without a context has a trace_id: %v", got[2])
	}
	if h := telemetry.LogHandler(telemetry.LogHandler(slog.NewJSONHandler(&buf, nil))); h == nil {
		t.Fatal("nil handler")
	}
}
