package telemetry_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/checkout-demo/checkout/internal/telemetry"
)

func TestMiddleware(t *testing.T) {
	exp := memory(t, "order")
	m := telemetry.NewMetrics()
	r := chi.NewRouter()
	var inHandler trace.SpanContext
	r.Get("/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		inHandler = trace.SpanContextFromContext(r.Context())
		w.WriteHeader(http.StatusOK)
	})
	r.Post("/orders", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) })
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {})
	srv := httptest.NewServer(telemetry.Middleware(m)(r))
	defer srv.Close()

	// A client in another service: its trace context goes in the headers.
	client := &http.Client{Transport: telemetry.Transport(nil)}
	ctx, caller := otel.Tracer("x").Start(t.Context(), "gateway request")
	for _, path := range []string{"/orders/41", "/orders/42", "/nothing/here", "/readyz"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Post(srv.URL+"/orders", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	caller.End()

	if inHandler.TraceID() != caller.SpanContext().TraceID() {
		t.Errorf("the handler's trace %s is not the caller's %s", inHandler.TraceID(), caller.SpanContext().TraceID())
	}
	text := scrape(t, m)
	for _, want := range []string{
		`checkout_http_request_duration_seconds_count{method="GET",route="/orders/{id}",status="200"} 2`,
		`checkout_http_request_duration_seconds_count{method="GET",route="unmatched",status="404"} 1`,
		`checkout_http_request_duration_seconds_count{method="POST",route="/orders",status="201"} 1`,
		`checkout_http_request_duration_seconds_count{method="GET",route="/readyz",status="200"} 1`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("/metrics lacks %s\n%s", want, grep(text, "_count"))
		}
	}
	server := map[string]int{}
	for _, s := range exp.GetSpans() {
		if s.SpanKind == trace.SpanKindServer {
			server[s.Name]++
			if s.Name == "GET /orders/{id}" && s.Parent.SpanID() == caller.SpanContext().SpanID() {
				t.Error("the server span hangs off the caller span, not off the client span")
			}
		}
	}
	if server["GET /orders/{id}"] != 2 || server["POST /orders"] != 1 || server["GET unmatched"] != 1 {
		t.Errorf("server spans %v", server)
	}
	if server["GET /readyz"] != 0 {
		t.Error("a probe got a span")
	}
}

// With no recording provider (the default), the middleware and the
// transport skip otelhttp but still carry the caller's trace context: what
// the service writes stays in the caller's trace.
func TestTraceContextCarriedWhenNotRecording(t *testing.T) {
	if telemetry.Enabled() {
		t.Fatal("a recording provider is installed")
	}
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	var inHandler trace.SpanContext
	var header string
	r := chi.NewRouter()
	r.Get("/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		inHandler = trace.SpanContextFromContext(r.Context())
		header = r.Header.Get("Traceparent")
	})
	srv := httptest.NewServer(telemetry.Middleware(telemetry.NewMetrics())(r))
	defer srv.Close()
	client := &http.Client{Transport: telemetry.Transport(nil)}

	caller := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(t.Context(), caller)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/orders/1", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if req.Header.Get("Traceparent") != "" {
		t.Error("the transport changed the caller's request")
	}
	if inHandler.TraceID() != caller.TraceID() || !inHandler.IsRemote() {
		t.Errorf("the handler's span context %v is not the caller's trace %s (header %q)", inHandler, caller.TraceID(), header)
	}

	// Without a trace context, nothing is added.
	req, _ = http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/orders/1", nil)
	if resp, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if header != "" || inHandler.IsValid() {
		t.Errorf("a request without trace context arrived with %q, %v", header, inHandler)
	}
}
