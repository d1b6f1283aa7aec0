package main

import (
	"bufio"
	"bytes"
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

// sentLog remembers which mails this service already handed to the SMTP
// server, so a mail asked for again — a message redelivered after a crash
// (sent, but the ack never reached the broker), an event published twice,
// or the order service asking again under a new event id — is announced
// again without a second mail. A mail is known by its identity, the order
// and the kind of mail (its Message-ID), as a UUID: mailKey.
//
// Each record is one line (the key) appended to the current file in dir
// (one file per sentLogSpan) with a single write, right after the SMTP
// server accepted the mail. A write survives the process being killed (the
// kernel holds it), so the window for a duplicate shrinks from "SMTP accept
// to ack" to the moments between the server's 250 and that write. The
// records do not survive the machine or a fresh container: the file lives
// where the container keeps it across restarts (/tmp natively; a volume or
// an emptyDir in containers). Several processes may share dir (replicas on
// one volume): lines are appended with O_APPEND, and a process that does
// not know a key reads what the others appended to the files of the
// current and the previous span since it last looked (a read on a file it
// keeps open; the directory is listed only when it opens and once a span);
// the previous span's file only until sentLogSkew past its end, which
// assumes the processes' clocks agree that closely (replicas on one volume
// share a host's clock).
//
// Memory: 16 bytes of key and 8 of time per record (plus the map's own),
// for ttl plus one span: about 40 MB at 300 mails/s with a one-hour ttl.
type sentLog struct {
	dir string
	ttl time.Duration

	mu      sync.Mutex
	sent    map[uuid.UUID]int64    // mail key → unix seconds it counts from
	offsets map[string]int64       // how far each file has been read
	readers map[string]*sentReader // the recent files, kept open for catching up
	// closed are files of past spans that get no more lines (read to
	// their end, or absent, after their span and sentLogSkew): catchUp
	// does not look at them again.
	closed map[string]bool
	buf    []byte // catchUp's read buffer
	f      *os.File
	file   string // the name f is for
}

// sentReader is a file of the current or the previous span, open for
// reading what siblings append to it: each look is one read(2) from where
// the last one stopped (the file's own offset), however many lines came.
type sentReader struct {
	f    *os.File
	end  time.Time // the end of the file's span: the time its records count from
	rest []byte    // the start of a line still being written
	skip bool      // rest overflowed: drop bytes up to the next newline
	pos  int64     // where the bytes not yet taken (rest) start
}

// sentLogSkew is how long past its span a file may still get lines (the
// clocks of processes sharing the directory may differ by this much).
const sentLogSkew = time.Minute

const (
	sentLogSpan   = 10 * time.Minute
	sentLogLayout = "200601021504"
)

func sentLogName(t time.Time) string {
	return "sent-" + t.UTC().Truncate(sentLogSpan).Format(sentLogLayout) + ".log"
}

// mailNamespace makes mail keys (and the EmailSent and EmailFailed ids) a
// function of the mail's Message-ID.
var mailNamespace = uuid.MustParse("6f1c1a52-4bd0-4d1e-9a0c-8a3b7c2e5d10")

// mailKey is the identity of a mail (its Message-ID: the order and the
// kind) as a UUID. It is also the id of the mail's EmailSent event, so the
// order service's inbox drops a mail announced twice.
func mailKey(messageID string) uuid.UUID { return uuid.NewSHA1(mailNamespace, []byte(messageID)) }

// openSentLog loads the records of the last ttl from dir and deletes older
// files. An empty dir keeps the records in memory only.
func openSentLog(dir string, ttl time.Duration, now time.Time) (*sentLog, error) {
	l := &sentLog{dir: dir, ttl: ttl, sent: map[uuid.UUID]int64{}, offsets: map[string]int64{}, readers: map[string]*sentReader{}, closed: map[string]bool{}}
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

// refresh lists dir, reads what was appended to the files of the last ttl
// since the last look, and deletes the files past it. The caller holds mu
// (or owns l).
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
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // another process removed it
		}
		if err != nil {
			return err
		}
		l.load(f, path, end)
		f.Close()
	}
	return nil
}

// load reads one file's keys from where it was last read to its last full
// line; at is taken as their time (the file's end, so a record lives at
// least ttl).
func (l *sentLog) load(f *os.File, path string, at time.Time) {
	off := l.offsets[path]
	r := bufio.NewReader(io.NewSectionReader(f, off, 1<<62))
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			off += int64(len(line)) // not a record: skip it
			continue
		}
		if err != nil {
			break // EOF, or a line still being written: read it next time
		}
		off += int64(len(line))
		if id, err := uuid.ParseBytes(bytes.TrimSpace(line)); err == nil {
			l.sent[id] = at.Unix()
		}
	}
	l.offsets[path] = off
}

// catchUp reads what siblings appended to the files of the current and the
// previous span since the last look: one read on each open file, no
// directory listing. A file that does not exist yet is tried again next
// time, unless its span is over (then nobody will write it); a file of a
// past span is read to its end once more and then left alone. In the
// usual case (the previous span's file done with) that is one read(2) per
// first-time mail. The caller holds mu.
func (l *sentLog) catchUp(now time.Time) {
	for _, t := range []time.Time{now, now.Add(-sentLogSpan)} {
		name := sentLogName(t)
		if l.closed[name] {
			continue
		}
		end := t.UTC().Truncate(sentLogSpan).Add(sentLogSpan)
		over := now.Sub(end) > sentLogSkew // no more lines will come
		rd := l.readers[name]
		if rd == nil {
			path := filepath.Join(l.dir, name)
			f, err := os.Open(path)
			if err != nil {
				// Not there yet, or unreadable: a mail may go out twice,
				// never zero times.
				if over && errors.Is(err, fs.ErrNotExist) {
					l.closed[name] = true
				}
				continue
			}
			if _, err := f.Seek(l.offsets[path], io.SeekStart); err != nil {
				f.Close()
				continue
			}
			rd = &sentReader{f: f, end: end, pos: l.offsets[path]}
			l.readers[name] = rd
		}
		l.follow(rd, filepath.Join(l.dir, name))
		if over {
			rd.f.Close()
			delete(l.readers, name)
			l.closed[name] = true
		}
	}
	// Files older than the previous span get no new lines: close them.
	for name, rd := range l.readers {
		if name != sentLogName(now) && name != sentLogName(now.Add(-sentLogSpan)) {
			rd.f.Close()
			delete(l.readers, name)
		}
	}
	for name := range l.closed {
		if name != sentLogName(now.Add(-sentLogSpan)) {
			delete(l.closed, name)
		}
	}
}

// follow reads what was appended to rd's file since the last look and
// takes its complete lines; a read that fills the buffer is followed by
// another.
func (l *sentLog) follow(rd *sentReader, path string) {
	if l.buf == nil {
		l.buf = make([]byte, 64<<10)
	}
	for {
		n, err := rd.f.Read(l.buf)
		data := l.buf[:n]
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				if rd.skip || len(rd.rest)+len(data) > 1024 {
					rd.pos += int64(len(rd.rest) + len(data))
					rd.rest, rd.skip = rd.rest[:0], true // not a record: drop it
				} else {
					rd.rest = append(rd.rest, data...)
				}
				break
			}
			line := data[:i]
			if len(rd.rest) > 0 {
				line = append(rd.rest, line...)
			}
			if !rd.skip {
				if id, err := uuid.ParseBytes(bytes.TrimSpace(line)); err == nil {
					l.sent[id] = rd.end.Unix()
				}
			}
			rd.pos += int64(len(rd.rest) + i + 1)
			rd.rest, rd.skip = rd.rest[:0], false
			data = data[i+1:]
		}
		if err != nil || n < len(l.buf) {
			// refresh reads on a handle of its own: what either has taken
			// is not read again by the next refresh.
			l.offsets[path] = max(l.offsets[path], rd.pos)
			return
		}
	}
}

// has reports whether the mail was sent within the ttl, by this process or
// (when dir is shared) by a sibling.
func (l *sentLog) has(key uuid.UUID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if at, ok := l.sent[key]; ok {
		return l.young(at)
	}
	if l.dir == "" {
		return false
	}
	l.catchUp(time.Now())
	at, ok := l.sent[key]
	return ok && l.young(at)
}

func (l *sentLog) young(at int64) bool {
	return time.Since(time.Unix(at, 0)) < l.ttl
}

// add records key. The in-memory record is made even when the file write
// fails; the error says the record would not survive a crash.
func (l *sentLog) add(key uuid.UUID) error {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[key] = now.Unix()
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
	var line [37]byte
	b := append(line[:0], key.String()...)
	if _, err := l.f.Write(append(b, '\n')); err != nil {
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
	for name, rd := range l.readers {
		rd.f.Close()
		delete(l.readers, name)
	}
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
