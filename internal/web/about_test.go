package web

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/go-chi/chi/v5"
)

func about(t *testing.T, service string, links func(*http.Request) map[string]string, host string) About {
	t.Helper()
	r := chi.NewRouter()
	r.Method(http.MethodGet, "/", HandleAbout(service, r, links, []Consumed{{Queue: "q", RoutingKeys: []string{"a.b.c"}}}, []string{"x.y.z"}))
	r.Method(http.MethodGet, "/things/{id}", http.NotFoundHandler())
	r.Method(http.MethodPost, "/things", http.NotFoundHandler())
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Host = host
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET / answered %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	var a About
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAbout(t *testing.T) {
	a := about(t, "payment", nil, "localhost:8002")
	if a.Service != "payment" || a.Version == "" {
		t.Errorf("service %q version %q", a.Service, a.Version)
	}
	if want := []string{"GET /", "GET /things/{id}", "POST /things"}; !slices.Equal(a.Endpoints, want) {
		t.Errorf("endpoints %v, want %v", a.Endpoints, want)
	}
	if len(a.Consumes) != 1 || a.Consumes[0].Queue != "q" || !slices.Equal(a.Consumes[0].RoutingKeys, []string{"a.b.c"}) ||
		!slices.Equal(a.Publishes, []string{"x.y.z"}) {
		t.Errorf("consumes %+v, publishes %v: not what the service said", a.Consumes, a.Publishes)
	}
	if a.Links != nil {
		t.Errorf("links %v on a service", a.Links)
	}

	g := about(t, "gateway", SystemLinks, "shop.local:9000")
	if g.Links["inbox"] != "http://shop.local:8026/" || g.Links["rabbitmq_management"] != "http://shop.local:15672/" {
		t.Errorf("links %v, want the inbox and management UI on the request's host", g.Links)
	}
	if v6 := about(t, "gateway", SystemLinks, "[::1]:9000"); v6.Links["inbox"] != "http://[::1]:8026/" {
		t.Errorf("links for an IPv6 host: %v", v6.Links)
	}
}
