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

// readSyscalls is how many read system calls (read, pread, readv) this
// process has made (Linux's /proc/self/io).
func readSyscalls(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			var n int
			if _, err := fmt.Sscan(v, &n); err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no syscr in /proc/self/io")
	return 0
}

// A first-time mail costs one read of the shared file (what siblings
// appended since the last look), not a read to the data and another to the
// end of the file, and a previous span's file that is done with (or was
// never written) is not looked at again.
func TestSentLogCatchUpReadsOnce(t *testing.T) {
	dir := t.TempDir()
	l, err := openSentLog(dir, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const mails = 200
	keys := make([]uuid.UUID, mails)
	for i := range keys {
		keys[i] = uuid.New()
	}
	before := readSyscalls(t)
	for _, k := range keys {
		if l.has(k) {
			t.Fatal("an unknown mail was found")
		}
		if err := l.add(k); err != nil {
			t.Fatal(err)
		}
	}
	// The reading of /proc/self/io is one read and one to its end; the
	// slack is for the span changing during the loop and for other
	// goroutines of the process (a test's leftover connection): the old
	// way took two reads a mail.
	if reads := readSyscalls(t) - before; reads > mails*3/2 {
		t.Fatalf("%d read system calls for %d first-time mails; want one each", reads, mails)
	}
	for _, k := range keys {
		if !l.has(k) {
			t.Fatalf("%s not found after add", k)
		}
	}

}

// Five minutes into a span the previous one's file, absent, is given up
// on; one that exists is read to its end once its span is over and then
// closed: catchUp does not look at either again.
func TestSentLogLetsPastSpansGo(t *testing.T) {
	dir := t.TempDir()
	l, err := openSentLog(dir, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	span := time.Now().UTC().Truncate(sentLogSpan).Add(3 * sentLogSpan) // spans no add writes to
	l.mu.Lock()
	l.catchUp(span.Add(5 * time.Minute))
	gaveUp := l.closed[sentLogName(span.Add(-sentLogSpan))]
	l.mu.Unlock()
	if !gaveUp {
		t.Fatal("the previous span's absent file is still looked for")
	}
	late := uuid.New()
	if err := os.WriteFile(filepath.Join(dir, sentLogName(span)), []byte(late.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.catchUp(span.Add(sentLogSpan + 5*time.Minute)) // the file is the previous span's, and that span is over
	_, found := l.sent[late]
	_, open := l.readers[sentLogName(span)]
	closed := l.closed[sentLogName(span)]
	l.mu.Unlock()
	if !found || open || !closed {
		t.Fatalf("the previous span's file: record read %v, still open %v, given up %v", found, open, closed)
	}
}
