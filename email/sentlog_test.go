package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestSentLog(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()

	// Two processes sharing the directory, appending concurrently.
	a, err := openSentLog(dir, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := openSentLog(dir, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]uuid.UUID, 200)
	for i := range ids {
		ids[i] = mailKey(fmt.Sprintf("order-%d.order_confirmation@shop.test", i))
	}
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			l := a
			if i%2 == 1 {
				l = b
			}
			if err := l.add(id); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// Each sees the other's records: a message redelivered to a sibling
	// after a crash is found.
	if !a.has(ids[0]) || !a.has(ids[1]) || !b.has(ids[0]) || a.has(uuid.New()) {
		t.Fatal("processes sharing the directory do not see each other's records")
	}
	// A line still being written (no newline yet) is not taken, and is
	// read whole once it is complete.
	partial := uuid.New()
	f, err := os.OpenFile(filepath.Join(dir, sentLogName(time.Now())), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(partial.String()[:20]); err != nil {
		t.Fatal(err)
	}
	if a.has(partial) {
		t.Fatal("a partial line was read as a record")
	}
	if _, err := f.WriteString(partial.String()[20:] + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !a.has(partial) {
		t.Fatal("the completed line was not read")
	}
	a.Close()
	b.Close()

	// A file past the ttl is deleted, not loaded.
	old := uuid.New()
	oldFile := filepath.Join(dir, sentLogName(now.Add(-3*time.Hour)))
	if err := os.WriteFile(oldFile, []byte(old.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := openSentLog(dir, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, id := range ids {
		if !c.has(id) {
			t.Fatalf("%s not loaded after a restart", id)
		}
	}
	if c.has(old) {
		t.Fatal("a record past the ttl was loaded")
	}
	if _, err := os.Stat(oldFile); !os.IsNotExist(err) {
		t.Fatalf("the expired file is still there: %v", err)
	}

	// Without a directory the records live in memory only.
	m, err := openSentLog("", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	x := uuid.New()
	if err := m.add(x); err != nil || !m.has(x) || m.has(uuid.New()) {
		t.Fatal("in-memory sent log")
	}
}

// At the start of a new span the records past the ttl are forgotten and
// their files deleted, in a process that runs for days.
func TestSentLogPrunes(t *testing.T) {
	dir := t.TempDir()
	l, err := openSentLog(dir, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	stale := uuid.New()
	staleFile := filepath.Join(dir, sentLogName(time.Now().Add(-2*time.Hour)))
	if err := os.WriteFile(staleFile, []byte(stale.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.sent[stale] = time.Now().Add(-2 * time.Hour).Unix()
	l.file = "sent-199001010000.log" // as if the last write was in an older span
	l.mu.Unlock()
	if err := l.add(uuid.New()); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	_, kept := l.sent[stale]
	n := len(l.sent)
	l.mu.Unlock()
	if kept || n != 1 {
		t.Fatalf("after a new span: stale record kept %v, %d records", kept, n)
	}
	if _, err := os.Stat(staleFile); !os.IsNotExist(err) {
		t.Fatalf("the stale file is still there: %v", err)
	}
}

// A line that is no record, however long, is skipped: the records after it
// are read.
func TestSentLogSkipsGarbage(t *testing.T) {
	dir := t.TempDir()
	key := mailKey("order-1.order_confirmation@shop.test")
	body := strings.Repeat("x", 10000) + "\nnot a uuid\n" + key.String() + "\n"
	if err := os.WriteFile(filepath.Join(dir, sentLogName(time.Now())), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := openSentLog(dir, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !l.has(key) {
		t.Fatal("the record after a garbage line was not read")
	}
}
