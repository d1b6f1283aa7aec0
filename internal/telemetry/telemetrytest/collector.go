// Package telemetrytest receives the spans of services that run as
// processes (the e2e tests' binaries): an OTLP/HTTP endpoint in the test,
// the counterpart of tracetest's in-memory exporter for in-process runs.
package telemetrytest

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
)

// Span is one received span, as much of it as tests look at.
type Span struct {
	Service, Name          string
	TraceID, SpanID        string // hex
	ParentSpanID           string // hex, "" for a root
	Kind                   int32  // OTLP's SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer
	LinkedTraces, LinkedTo []string
	Error                  bool
	Attributes             map[string]string // string values only
}

// Collector is an OTLP/HTTP trace receiver. Point a service at it with
// OTEL_EXPORTER_OTLP_ENDPOINT=c.URL (and OTEL_BSP_SCHEDULE_DELAY=100 so
// spans arrive promptly).
type Collector struct {
	URL string

	mu      sync.Mutex
	spans   []Span
	changed chan struct{}
}

// NewCollector starts a collector that stops when the test ends.
func NewCollector(tb testing.TB) *Collector {
	c := &Collector{changed: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(c.receive))
	tb.Cleanup(srv.Close)
	c.URL = srv.URL
	return c
}

func (c *Collector) receive(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req coltrace.ExportTraceServiceRequest
	if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "want an OTLP/HTTP protobuf trace export at /v1/traces", http.StatusBadRequest)
		return
	}
	var got []Span
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				sp := Span{Service: service, Name: s.Name, TraceID: hex.EncodeToString(s.TraceId),
					SpanID: hex.EncodeToString(s.SpanId), ParentSpanID: hex.EncodeToString(s.ParentSpanId),
					Kind: int32(s.Kind), Error: s.GetStatus().GetCode() == 2, Attributes: map[string]string{}}
				for _, l := range s.Links {
					sp.LinkedTraces = append(sp.LinkedTraces, hex.EncodeToString(l.TraceId))
					sp.LinkedTo = append(sp.LinkedTo, hex.EncodeToString(l.SpanId))
				}
				for _, a := range s.Attributes {
					if v, ok := a.GetValue().GetValue().(*commonpb.AnyValue_StringValue); ok {
						sp.Attributes[a.Key] = v.StringValue
					}
				}
				got = append(got, sp)
			}
		}
	}
	c.mu.Lock()
	c.spans = append(c.spans, got...)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	b, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(b)
}

// Spans returns every span received so far.
func (c *Collector) Spans() []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Span(nil), c.spans...)
}

// Trace returns the received spans of one trace.
func (c *Collector) Trace(traceID string) []Span {
	var out []Span
	for _, s := range c.Spans() {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// Wait blocks until done(spans so far) is true, and fails the test when
// that has not happened within timeout. It wakes on each export, not on a
// clock.
func (c *Collector) Wait(tb testing.TB, timeout time.Duration, done func([]Span) bool) []Span {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		spans, changed := append([]Span(nil), c.spans...), c.changed
		c.mu.Unlock()
		if done(spans) {
			return spans
		}
		select {
		case <-changed:
		case <-deadline:
			tb.Fatalf("the spans wanted did not arrive within %s (%d received)", timeout, len(spans))
			return nil
		}
	}
}
