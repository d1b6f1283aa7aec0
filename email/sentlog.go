package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// sentLog remembers which payment events this service already mailed, so a
// message redelivered after a crash (sent, but the ack never reached the
// broker) is announced again without a second mail.
//
// Each record is one line (the event id) appended to the current file in
// dir (one file per sentLogSpan) with a single write, right after the SMTP
// server accepted the mail. A write survives the process being killed (the
// kernel holds it), so the window for a duplicate shrinks from "SMTP accept
// to ack" (a confirm round trip, much longer while a backlog drains) to the
// moments between the server's 250 and that write. The records do not
// survive the machine or a fresh container: the file lives where the
// container keeps it across restarts (/tmp natively; a volume or an emptyDir
// in containers). Several processes may share dir (replicas on one volume):
// lines are appended with O_APPEND, and a process that does not know an id
// reads what the others appended since it last looked, so a message
// redelivered to a sibling after a crash is found too.
//
// Memory: 16 bytes of id and 8 of time per record (plus the map's own),
// for ttl plus one span: about 40 MB at 300 mails/s with a one-hour ttl.
type sentLog struct {
	dir string
	ttl time.Duration

	mu      sync.Mutex
	sent    map[uuid.UUID]int64 // event id → unix seconds it counts from
	offsets map[string]int64    // how far each file has been read
	f       *os.File
	file    string // the name f is for
}

const (
	sentLogSpan   = 10 * time.Minute
	sentLogLayout = "200601021504"
)

func sentLogName(t time.Time) string {
	return "sent-" + t.UTC().Truncate(sentLogSpan).Format(sentLogLayout) + ".log"
}

// openSentLog loads the records of the last ttl from dir and deletes older
// files. An empty dir keeps the records in memory only.
func openSentLog(dir string, ttl time.Duration, now time.Time) (*sentLog, error) {
	l := &sentLog{dir: dir, ttl: ttl, sent: map[uuid.UUID]int64{}, offsets: map[string]int64{}}
	if dir == "" {
		return l, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := l.refresh(now); err != nil {
		return nil, err
	}
	return l, nil
}

// refresh reads what was appended to the files of the last ttl since the
// last look, and deletes the files past it. The caller holds mu (or owns l).
func (l *sentLog) refresh(now time.Time) error {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		stamp, ok := strings.CutPrefix(name, "sent-")
		stamp, ok2 := strings.CutSuffix(stamp, ".log")
		if !ok || !ok2 {
			continue
		}
		start, err := time.ParseInLocation(sentLogLayout, stamp, time.UTC)
		if err != nil {
			continue
		}
		path := filepath.Join(l.dir, name)
		// A file covers [start, start+span): keep it while any of it is young.
		end := start.Add(sentLogSpan)
		if now.Sub(end) > l.ttl {
			_ = os.Remove(path)
			delete(l.offsets, path)
			continue
		}
		if err := l.load(path, end); err != nil {
			return err
		}
	}
	return nil
}

// load reads one file's ids from where it was last read to its last full
// line; at is taken as their time (the file's end, so a record lives at
// least ttl).
func (l *sentLog) load(path string, at time.Time) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // another process removed it
	}
	if err != nil {
		return err
	}
	defer f.Close()
	off := l.offsets[path]
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break // EOF, or a line still being written: read it next time
		}
		off += int64(len(line))
		if id, err := uuid.Parse(strings.TrimSpace(line)); err == nil {
			l.sent[id] = at.Unix()
		}
	}
	l.offsets[path] = off
	return nil
}

func (l *sentLog) has(eventID string) bool {
	id, err := uuid.Parse(eventID)
	if err != nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if at, ok := l.sent[id]; ok {
		return l.young(at)
	}
	if l.dir == "" {
		return false
	}
	// Perhaps a sibling sent it: read what the others appended. A failure
	// to read counts as not sent (the mail may go out twice, never zero
	// times).
	_ = l.refresh(time.Now())
	at, ok := l.sent[id]
	return ok && l.young(at)
}

func (l *sentLog) young(at int64) bool {
	return time.Since(time.Unix(at, 0)) < l.ttl
}

// add records eventID. The in-memory record is made even when the file
// write fails; the error says the record would not survive a crash.
func (l *sentLog) add(eventID string) error {
	id, err := uuid.Parse(eventID)
	if err != nil {
		return fmt.Errorf("sent log: event id: %w", err)
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[id] = now.Unix()
	if name := sentLogName(now); name != l.file {
		// A new span: the next file, and the time to forget the old.
		if l.f != nil {
			_ = l.f.Close()
			l.f = nil
		}
		if l.file != "" {
			l.prune(now)
		}
		l.file = name
	}
	if l.dir == "" {
		return nil
	}
	if l.f == nil {
		f, err := os.OpenFile(filepath.Join(l.dir, l.file), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("sent log: %w", err)
		}
		l.f = f
	}
	if _, err := l.f.WriteString(id.String() + "\n"); err != nil {
		return fmt.Errorf("sent log: %w", err)
	}
	return nil
}

// prune forgets the records past the ttl and deletes their files; it runs
// when a new file begins (once a span).
func (l *sentLog) prune(now time.Time) {
	for id, at := range l.sent {
		if now.Sub(time.Unix(at, 0)) > l.ttl {
			delete(l.sent, id)
		}
	}
	if l.dir != "" {
		_ = l.refresh(now)
	}
}

func (l *sentLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
