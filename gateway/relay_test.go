package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
)

// TestRelayAllocatesNoCopyBufferPerAnswer relays real upstream answers and
// counts the bytes relay allocates for each: io.Copy into a writer that is
// not an io.ReaderFrom (the middleware's recorder is not) makes a 32 KiB
// buffer per call, which was most of the gateway's garbage per checkout.
func TestRelayAllocatesNoCopyBufferPerAnswer(t *testing.T) {
	body := strings.Repeat("x", 2000)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}))
	defer up.Close()
	log := slog.New(slog.DiscardHandler)
	const n = 50
	var allocated uint64
	for range n {
		resp, err := http.Get(up.URL)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		rec.Body.Grow(len(body)) // the recorder's own growth is not relay's
		req := httptest.NewRequest(http.MethodPost, "/api/checkout", nil)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		relay(rec, req, log, resp)
		runtime.ReadMemStats(&after)
		allocated += after.TotalAlloc - before.TotalAlloc
		if rec.Code != http.StatusOK || rec.Body.String() != body || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("relayed %d %q (%d bytes), want 200 application/json with the %d bytes sent",
				rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len(), len(body))
		}
	}
	if per := allocated / n; per > 8<<10 {
		t.Errorf("relay allocated %d bytes per answer, want at most 8 KiB", per)
	}
}
