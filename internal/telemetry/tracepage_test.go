package telemetry_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/telemetry"
)

// fakeJaeger answers GET /api/traces/{id} with a recorded answer of
// Jaeger's query API (testdata/jaeger-trace.json, its structured JSON
// model) for that trace, and Jaeger's 404 for any other.
func fakeJaeger(t *testing.T, file, traceID string) *httptest.Server {
	t.Helper()
	body, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/api/traces/"+traceID {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"data":null,"total":0,"limit":0,"offset":0,"errors":[{"code":404,"msg":"trace not found"}]}`)
			return
		}
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func servePage(t *testing.T, jaeger, path string) (int, string) {
	t.Helper()
	r := chi.NewRouter()
	r.Method(http.MethodGet, "/traces/{trace_id}", telemetry.TracePage(jaeger))
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

var rowOp = regexp.MustCompile(`<td class="op" style="padding-left:([0-9.]+)em">([^<]+)`)

func TestTracePage(t *testing.T) {
	const id = "5b8efff798038103d269b633813fc60c"
	jaeger := fakeJaeger(t, "testdata/jaeger-trace.json", id)

	code, page := servePage(t, jaeger.URL, "/traces/"+strings.ToUpper(id))
	if code != http.StatusOK {
		t.Fatalf("status %d:\n%s", code, page)
	}
	// Parents before their children, children indented one level deeper,
	// siblings by start time: the waterfall of one checkout.
	var got []string
	for _, m := range rowOp.FindAllStringSubmatch(page, -1) {
		got = append(got, m[1]+" "+strings.TrimSpace(m[2]))
	}
	want := []string{"0.0 POST /api/checkout", "1.2 POST order:8001", "2.4 POST /orders",
		"3.6 publish ecommerce_events", "4.8 process payment.order-created", "6.0 charge"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("rows\n %q\nwant\n %q", got, want)
	}
	for _, s := range []string{">gateway<", ">order<", ">payment<", "6 spans", `class="err"`} {
		if !strings.Contains(page, s) {
			t.Errorf("the page lacks %s", s)
		}
	}
	if strings.Contains(page, "ZgotmplZ") || !strings.Contains(page, `style="left:0.890%;width:99.110%"`) {
		t.Error("the bars are not placed on the time axis (the consumer starts 8.9 ms into a 1011 ms trace)")
	}
	if strings.Count(page, `class="err"`) != 1 {
		t.Error("want exactly the charge span marked as an error")
	}

	for _, c := range []struct {
		name, jaeger, path string
		want               int
	}{
		{"ErrNotFound", jaeger.URL, "/traces/00000000000000000000000000000001", http.StatusNotFound},
		{"ErrBadID", jaeger.URL, "/traces/..%2f..%2fapi", http.StatusBadRequest},
		{"ErrShortID", jaeger.URL, "/traces/abc", http.StatusBadRequest},
		{"ErrJaegerDown", "http://127.0.0.1:1", "/traces/" + id, http.StatusBadGateway},
	} {
		t.Run(c.name, func(t *testing.T) {
			if code, page := servePage(t, c.jaeger, c.path); code != c.want {
				t.Errorf("status %d, want %d:\n%s", code, c.want, page)
			}
		})
	}
}

// TestTracePageRecorded renders an answer recorded from a real Jaeger
// (v2.13, built by scripts/jaeger.sh) for spans made with this package:
// Jaeger turns the consumer's parent, which is also its link, into a
// FOLLOWS_FROM reference, and the consumer must still hang under the
// publish.
func TestTracePageRecorded(t *testing.T) {
	const id = "4d8f408c3e19465e49f7536c733ad85f"
	jaeger := fakeJaeger(t, "testdata/jaeger-recorded.json", id)
	code, page := servePage(t, jaeger.URL, "/traces/"+id)
	if code != http.StatusOK {
		t.Fatalf("status %d:\n%s", code, page)
	}
	var got []string
	for _, m := range rowOp.FindAllStringSubmatch(page, -1) {
		got = append(got, m[1]+" "+strings.TrimSpace(m[2]))
	}
	want := []string{"0.0 POST /api/checkout", "1.2 insert order", "2.4 publish ecommerce_events",
		"3.6 process payment.order-created", "4.8 charge"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("rows\n %q\nwant\n %q", got, want)
	}
}
