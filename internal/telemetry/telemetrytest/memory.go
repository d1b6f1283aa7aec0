package telemetrytest

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/checkout-demo/checkout/internal/telemetry"
)

// Memory installs a tracer provider for service that keeps its spans in
// memory, for in-process tests, and puts the previous one back at the end.
func Memory(t testing.TB, service string) *tracetest.InMemoryExporter {
	t.Helper()
	prev := otel.GetTracerProvider()
	exp := tracetest.NewInMemoryExporter()
	shutdown := telemetry.SetupForTest(service, exp)
	t.Cleanup(func() {
		_ = shutdown(context.Background())
		otel.SetTracerProvider(prev)
	})
	return exp
}
