package postgres_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/testenv"
)

// TestQuerySpans: with tracing on, a query run under a span gets a child
// span of its own; with it off, the pool has no tracer at all.
func TestQuerySpans(t *testing.T) {
	url := testenv.Database(t)
	off, err := postgres.Open(url, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	if off.Pool.Config().ConnConfig.Tracer != nil {
		t.Fatal("a query tracer while tracing is off")
	}

	prev := otel.GetTracerProvider()
	exp := tracetest.NewInMemoryExporter()
	shutdown := telemetry.SetupForTest("order", exp)
	defer func() { _ = shutdown(context.Background()); otel.SetTracerProvider(prev) }()
	db, err := postgres.Open(url, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, span := otel.Tracer("x").Start(context.Background(), "handle")
	if _, err := db.Pool.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	span.End()
	var query bool
	for _, s := range exp.GetSpans() {
		if s.Parent.SpanID() == span.SpanContext().SpanID() && s.SpanKind == trace.SpanKindClient {
			for _, a := range s.Attributes {
				query = query || (a.Key == "db.system.name" && a.Value.AsString() == "postgresql")
			}
		}
	}
	if !query {
		t.Errorf("no postgresql client span under the caller's span among %d", len(exp.GetSpans()))
	}
}
