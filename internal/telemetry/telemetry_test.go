package telemetry_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/telemetry/telemetrytest"
)

// clearOTEL unsets every variable Setup reads, for the test.
func clearOTEL(t *testing.T) {
	for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"} {
		t.Setenv(k, "")
	}
}

// memory installs an in-memory exporter as the global provider for the
// test and returns it.
func memory(t *testing.T, service string) *tracetest.InMemoryExporter {
	return telemetrytest.Memory(t, service)
}

func TestSetup(t *testing.T) {
	t.Run("NothingSetIsNoop", func(t *testing.T) {
		clearOTEL(t)
		prev := otel.GetTracerProvider()
		t.Cleanup(func() { otel.SetTracerProvider(prev) })
		shutdown, err := telemetry.Setup(context.Background(), "order")
		if err != nil {
			t.Fatal(err)
		}
		defer shutdown(context.Background())
		if telemetry.Enabled() {
			t.Error("Enabled() with nothing configured")
		}
		_, span := otel.Tracer("x").Start(context.Background(), "op")
		defer span.End()
		if span.IsRecording() {
			t.Error("a span records with nothing configured")
		}
		// The propagator is installed all the same: a caller's context passes through.
		if f := otel.GetTextMapPropagator().Fields(); len(f) == 0 {
			t.Error("no propagator")
		}
	})
	t.Run("ExporterNone", func(t *testing.T) {
		clearOTEL(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
		t.Setenv("OTEL_TRACES_EXPORTER", "none")
		shutdown, err := telemetry.Setup(context.Background(), "order")
		if err != nil {
			t.Fatal(err)
		}
		defer shutdown(context.Background())
		if telemetry.Enabled() {
			t.Error("Enabled() with OTEL_TRACES_EXPORTER=none")
		}
	})
	t.Run("ErrUnsupportedExporter", func(t *testing.T) {
		clearOTEL(t)
		t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
		if _, err := telemetry.Setup(context.Background(), "order"); err == nil {
			t.Error("no error for OTEL_TRACES_EXPORTER=zipkin")
		}
	})
	t.Run("ErrUnsupportedProtocol", func(t *testing.T) {
		clearOTEL(t)
		t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
		t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
		if _, err := telemetry.Setup(context.Background(), "order"); err == nil {
			t.Error("no error for http/json")
		}
	})
	t.Run("EndpointExportsOTLP", func(t *testing.T) {
		clearOTEL(t)
		collector := telemetrytest.NewCollector(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
		t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
		prev := otel.GetTracerProvider()
		t.Cleanup(func() { otel.SetTracerProvider(prev) })

		shutdown, err := telemetry.Setup(context.Background(), "payment")
		if err != nil {
			t.Fatal(err)
		}
		if !telemetry.Enabled() {
			t.Error("not Enabled() with an endpoint")
		}
		_, span := otel.Tracer("x").Start(context.Background(), "charge")
		want := span.SpanContext().SpanID()
		span.End()
		if err := shutdown(context.Background()); err != nil { // flushes
			t.Fatal(err)
		}
		spans := collector.Wait(t, 10*time.Second, func(s []telemetrytest.Span) bool { return len(s) > 0 })
		if len(spans) != 1 || spans[0].SpanID != want.String() || spans[0].Name != "charge" {
			t.Fatalf("the collector got %+v, want span %s named charge", spans, want)
		}
		if spans[0].Service != "payment" {
			t.Errorf("service.name = %q, want payment", spans[0].Service)
		}
	})
	t.Run("ServiceNameFromEnv", func(t *testing.T) {
		clearOTEL(t)
		t.Setenv("OTEL_SERVICE_NAME", "payment-eu")
		exp := memory(t, "payment")
		_, span := otel.Tracer("x").Start(context.Background(), "op")
		span.End()
		spans := exp.GetSpans()
		if len(spans) != 1 {
			t.Fatalf("%d spans", len(spans))
		}
		for _, a := range spans[0].Resource.Attributes() {
			if a.Key == "service.name" && a.Value.AsString() != "payment-eu" {
				t.Errorf("service.name = %q, want OTEL_SERVICE_NAME's payment-eu", a.Value.AsString())
			}
		}
	})
}
