package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// connCounter is an upstream that counts the connections it accepted.
type connCounter struct {
	srv   *httptest.Server
	conns atomic.Int32
}

func newConnCounter(t *testing.T, h http.HandlerFunc) *connCounter {
	c := &connCounter{}
	c.srv = httptest.NewUnstartedServer(h)
	c.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			c.conns.Add(1)
		}
	}
	c.srv.Start()
	t.Cleanup(c.srv.Close)
	return c
}

func roundTrip(t *testing.T, tr http.RoundTripper, ctx context.Context, method, url, body string, header http.Header) (*http.Response, string, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// The transport carries requests and their answers (fixed-length and
// chunked, with and without a body) and keeps one connection for a
// sequence of them.
func TestTransportReusesConnections(t *testing.T) {
	t.Parallel()
	up := newConnCounter(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen", r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("X-Test"))
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("part one, "))
			w.(http.Flusher).Flush()
			w.Write([]byte("part two"))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusCreated)
			w.Write(b)
		}
	})
	tr := newTransport(http.DefaultTransport)
	defer tr.CloseIdleConnections()
	for i := range 3 {
		resp, body, err := roundTrip(t, tr, context.Background(), http.MethodPost, up.srv.URL+"/orders?x=1", `{"n":1}`, http.Header{"X-Test": {"yes"}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusCreated || body != `{"n":1}` || resp.Header.Get("X-Seen") != "POST /orders?x=1 yes" {
			t.Fatalf("request %d: %d %q %q", i, resp.StatusCode, body, resp.Header.Get("X-Seen"))
		}
		if resp, body, err = roundTrip(t, tr, context.Background(), http.MethodGet, up.srv.URL+"/chunked", "", nil); err != nil || body != "part one, part two" {
			t.Fatalf("chunked answer: %v %q", err, body)
		}
		if len(resp.TransferEncoding) == 0 {
			t.Fatalf("the chunked answer came with %v", resp.TransferEncoding)
		}
		if resp, _, err = roundTrip(t, tr, context.Background(), http.MethodGet, up.srv.URL+"/empty", "", nil); err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("empty answer: %v %v", err, resp)
		}
	}
	if n := up.conns.Load(); n != 1 {
		t.Errorf("nine sequential requests used %d connections, want 1", n)
	}
}

// A connection whose answer was not read to its end, or that the upstream
// marked for closing, is not used again; the next request gets a new one
// and its own answer.
func TestTransportDropsConnectionsItCannotReuse(t *testing.T) {
	t.Parallel()
	up := newConnCounter(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		w.Write([]byte(strings.Repeat("x", 64<<10) + r.URL.Path))
	})
	tr := newTransport(http.DefaultTransport)
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, up.srv.URL+"/half", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, body, err := roundTrip(t, tr, context.Background(), http.MethodGet, up.srv.URL+"/close", "", nil); err != nil || !strings.HasSuffix(body, "/close") {
		t.Fatalf("after a half-read answer: %v %q", err, body[max(0, len(body)-10):])
	}
	if _, body, err := roundTrip(t, tr, context.Background(), http.MethodGet, up.srv.URL+"/next", "", nil); err != nil || !strings.HasSuffix(body, "/next") {
		t.Fatalf("after a closing answer: %v %q", err, body[max(0, len(body)-10):])
	}
	if n := up.conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3 (a half-read answer and a closing one each end theirs)", n)
	}
}

// An idle connection the upstream closed is noticed when it is used: a
// request that is safe to repeat (GET, or one with an Idempotency-Key) is
// sent again on a new connection; one that is not fails, so that the
// gateway never repeats what could place a second order.
func TestTransportStaleConnection(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var conns []net.Conn
	var seen atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	}))
	up.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}
	up.Start()
	defer up.Close()
	closeAll := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
		time.Sleep(20 * time.Millisecond) // the FIN reaches the client side
	}
	tr := newTransport(http.DefaultTransport)
	defer tr.CloseIdleConnections()
	for _, tc := range []struct {
		name   string
		method string
		header http.Header
		ok     bool
	}{
		{"GET", http.MethodGet, nil, true},
		{"POSTWithKey", http.MethodPost, http.Header{IdempotencyKeyHeader: {"k1"}}, true},
		{"POSTWithoutKey", http.MethodPost, nil, false},
	} {
		if _, _, err := roundTrip(t, tr, context.Background(), http.MethodGet, up.URL, "", nil); err != nil {
			t.Fatal(err)
		}
		closeAll()
		before := seen.Load()
		_, body, err := roundTrip(t, tr, context.Background(), tc.method, up.URL, "{}", tc.header)
		if tc.ok && (err != nil || body != "ok") {
			t.Errorf("%s on a stale connection: %v %q, want it sent again and answered", tc.name, err, body)
		}
		if !tc.ok && err == nil {
			t.Errorf("%s on a stale connection was sent again", tc.name)
		}
		if got, want := seen.Load()-before, map[bool]int32{true: 1, false: 0}[tc.ok]; got != want {
			t.Errorf("%s: the upstream got it %d times, want %d", tc.name, got, want)
		}
	}
}

// A request's context bounds it: an upstream that does not answer holds
// the caller only until the context ends, and the call fails with the
// context's error (which the gateway tells from a lost connection).
func TestTransportHonoursTheContext(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.Write([]byte("head"))
			w.(http.Flusher).Flush()
		}
		<-release
	}))
	defer up.Close()
	defer close(release)
	tr := newTransport(http.DefaultTransport)
	defer tr.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err := roundTrip(t, tr, ctx, http.MethodGet, up.URL+"/head", "", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("no answer within the deadline: %v, want %v", err, context.DeadlineExceeded)
	}

	ctx, cancel = context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, up.URL+"/body", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	if b, err := io.ReadAll(resp.Body); err == nil || string(b) != "head" {
		t.Errorf("a body cut by the caller's cancel: %q, %v; want the part sent and an error", b, err)
	}
	resp.Body.Close()
}

// A connection that cannot be made is reported as a dial error: the
// gateway counts such a call as certainly not sent.
func TestTransportDialError(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	tr := newTransport(http.DefaultTransport)
	_, _, err = roundTrip(t, tr, context.Background(), http.MethodPost, "http://"+addr+"/orders", "{}", nil)
	if err == nil || !neverSent(err) {
		t.Errorf("refused connection: %v, want a dial error", err)
	}
}
