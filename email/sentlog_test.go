package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
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
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			l := a
			if i%2 == 1 {
				l = b
			}
			if err := l.add(fmt.Sprintf("event-%03d", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// Each sees the other's records: a message redelivered to a sibling
	// after a crash is found.
	if !a.has("event-000") || !a.has("event-001") || !b.has("event-000") || a.has("event-999") {
		t.Fatal("processes sharing the directory do not see each other's records")
	}
	// A line still being written (no newline yet) is not taken, and is
	// read whole once it is complete.
	f, err := os.OpenFile(filepath.Join(dir, "sent-"+now.UTC().Format(sentLogLayout)+".log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("event-par"); err != nil {
		t.Fatal(err)
	}
	if a.has("event-par") || a.has("event-partial") {
		t.Fatal("a partial line was read as a record")
	}
	if _, err := f.WriteString("tial\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !a.has("event-partial") {
		t.Fatal("the completed line was not read")
	}
	a.Close()
	b.Close()

	// An hour-old file that is past the ttl is deleted, not loaded.
	old := filepath.Join(dir, "sent-"+now.Add(-3*time.Hour).UTC().Format(sentLogLayout)+".log")
	if err := os.WriteFile(old, []byte("event-old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := openSentLog(dir, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 200 {
		if id := fmt.Sprintf("event-%03d", i); !c.has(id) {
			t.Fatalf("%s not loaded after a restart", id)
		}
	}
	if c.has("event-old") {
		t.Fatal("a record past the ttl was loaded")
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("the expired file is still there: %v", err)
	}

	// Without a directory the records live in memory only.
	m, err := openSentLog("", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.add("x"); err != nil || !m.has("x") || m.has("y") {
		t.Fatal("in-memory sent log")
	}
}
