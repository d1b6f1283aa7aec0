package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/web"
)

// TestObserved: a service's handler serves /metrics with the request
// histogram, and its access log line carries the trace id of the request
// the caller started.
func TestObserved(t *testing.T) {
	prev := otel.GetTracerProvider()
	shutdown := telemetry.SetupForTest("order", tracetest.NewInMemoryExporter())
	defer func() { _ = shutdown(context.Background()); otel.SetTracerProvider(prev) }()

	var logs bytes.Buffer
	log := web.NewLogger(&logs, "debug", "json", "order") // a request that went well is logged at debug
	m := telemetry.NewMetrics()
	r := chi.NewRouter()
	r.Get("/orders/{id}", func(w http.ResponseWriter, r *http.Request) { web.WriteJSON(w, http.StatusOK, "ok") })
	srv := httptest.NewServer(web.Observed(log, m, r))
	defer srv.Close()

	ctx, caller := otel.Tracer("x").Start(context.Background(), "client")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/orders/7", nil)
	resp, err := (&http.Client{Transport: telemetry.Transport(nil)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	caller.End()

	resp, err = http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `checkout_http_request_duration_seconds_count{method="GET",route="/orders/{id}",status="200"} 1` + "\n"
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		t.Errorf("/metrics (%d) lacks %s", resp.StatusCode, want)
	}

	var lines []map[string]any
	dec := json.NewDecoder(&logs)
	for dec.More() {
		var l map[string]any
		if err := dec.Decode(&l); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	if len(lines) != 1 { // the scrape is not logged
		t.Fatalf("%d log lines, want the one for /orders/7: %v", len(lines), lines)
	}
	if lines[0]["trace_id"] != caller.SpanContext().TraceID().String() {
		t.Errorf("access log line %v lacks trace_id %s", lines[0], caller.SpanContext().TraceID())
	}
}

// At the default level a request that went well is not logged (the work
// it did logs its own line with the request id), a client error is logged
// at info and a server error at warn.
func TestAccessLogLevels(t *testing.T) {
	var logs bytes.Buffer
	log := web.NewLogger(&logs, "info", "json", "order")
	r := chi.NewRouter()
	r.Get("/ok", func(w http.ResponseWriter, r *http.Request) { web.WriteJSON(w, http.StatusOK, "ok") })
	r.Get("/bad", func(w http.ResponseWriter, r *http.Request) {
		web.WriteProblem(w, r, http.StatusUnprocessableEntity, "bad")
	})
	r.Get("/broken", func(w http.ResponseWriter, r *http.Request) {
		web.WriteProblem(w, r, http.StatusInternalServerError, "broken")
	})
	srv := httptest.NewServer(web.Observed(log, telemetry.NewMetrics(), r))
	defer srv.Close()
	for _, p := range []string{"/ok", "/bad", "/broken"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	got := map[string]string{}
	dec := json.NewDecoder(&logs)
	for dec.More() {
		var l map[string]any
		if err := dec.Decode(&l); err != nil {
			t.Fatal(err)
		}
		got[l["path"].(string)] = l["level"].(string)
	}
	want := map[string]string{"/bad": "INFO", "/broken": "WARN"}
	if len(got) != len(want) || got["/bad"] != want["/bad"] || got["/broken"] != want["/broken"] {
		t.Errorf("access log levels %v, want %v", got, want)
	}
}
