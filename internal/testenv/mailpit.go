package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Mailpit is a Mailpit server of the test's own.
type Mailpit struct {
	URL      string // HTTP API, e.g. http://127.0.0.1:41234
	SMTPPort int
}

// MailpitBinary finds the mailpit binary (PATH, then GOPATH/bin).
func MailpitBinary(tb testing.TB) string {
	tb.Helper()
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p
	}
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "mailpit")
	if _, err := os.Stat(p); err != nil {
		unavailable(tb, "Mailpit", fmt.Errorf("mailpit binary not found; make deps installs it"))
	}
	return p
}

// StartMailpit starts Mailpit, keeping mails in memory, and stops it when
// the test ends. Mailpit listens on Unix sockets in a folder of its own;
// its SMTP and HTTP ports are proxies in front of them, listening from
// before Mailpit starts until the test ends, so no port is chosen free and
// taken later.
func StartMailpit(tb testing.TB) Mailpit {
	tb.Helper()
	dir, err := os.MkdirTemp("", "mailpit") // short: a socket's path has a limit of about 100 bytes
	if err != nil {
		tb.Fatal(err)
	}
	smtpSock, webSock := filepath.Join(dir, "smtp.sock"), filepath.Join(dir, "web.sock")
	smtp, web := newProxy(tb, "unix", smtpSock), newProxy(tb, "unix", webSock)
	cmd := exec.Command(MailpitBinary(tb),
		"--smtp", "unix:"+smtpSock+":0600", "--listen", "unix:"+webSock+":0600",
		"--max", "0", "--quiet", "--disable-version-check", "--smtp-auth-accept-any", "--smtp-auth-allow-insecure")
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		tb.Fatalf("start mailpit: %v", err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); os.RemoveAll(dir) })
	m := Mailpit{URL: "http://" + web.Addr(), SMTPPort: smtp.ln.Addr().(*net.TCPAddr).Port}
	WaitHTTP(tb, m.URL+"/api/v1/messages", 30*time.Second)
	return m
}

// MailSummary is what Mailpit's API says of one message.
type MailSummary struct {
	ID        string `json:"ID"`
	MessageID string `json:"MessageID"`
	Subject   string `json:"Subject"`
	Snippet   string `json:"Snippet"`
	To        []struct {
		Address string `json:"Address"`
	} `json:"To"`
}

// Messages lists every message in the inbox.
func (m Mailpit) Messages(tb testing.TB) []MailSummary {
	tb.Helper()
	var all []MailSummary
	for start := 0; ; {
		var page struct {
			Total    int           `json:"total"`
			Messages []MailSummary `json:"messages"`
		}
		GetJSON(tb, fmt.Sprintf("%s/api/v1/messages?start=%d&limit=1000", m.URL, start), nil, &page)
		all = append(all, page.Messages...)
		start += len(page.Messages)
		if len(page.Messages) == 0 || start >= page.Total {
			return all
		}
	}
}

// Text returns the plain-text body of a message.
func (m Mailpit) Text(tb testing.TB, id string) string {
	tb.Helper()
	var msg struct{ Text string }
	GetJSON(tb, m.URL+"/api/v1/message/"+id, nil, &msg)
	return msg.Text
}
