package telemetry

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// TracePage serves one trace as an HTML waterfall drawn from the Jaeger
// query API at jaegerURL (http://localhost:16686): GET {jaegerURL}/api/traces/{id}.
// A Jaeger built from its Go module has that API but no web UI, so this is
// how `make run` shows a trace. The trace id is the route parameter
// "trace_id" (chi's, or net/http's pattern {trace_id}), else the query
// parameter "id": mount it as /traces/{trace_id}.
func TracePage(jaegerURL string) http.Handler {
	client := &http.Client{Timeout: 5 * time.Second}
	base := strings.TrimRight(jaegerURL, "/")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "trace_id")
		if id == "" {
			id = r.PathValue("trace_id")
		}
		if id == "" {
			id = r.URL.Query().Get("id")
		}
		id = strings.ToLower(id)
		if !validTraceID(id) {
			http.Error(w, "a trace id is 32 hex digits", http.StatusBadRequest)
			return
		}
		tr, err := fetchTrace(r.Context(), client, base, id)
		var page waterfall
		switch {
		case errors.Is(err, errTraceNotFound):
			w.WriteHeader(http.StatusNotFound)
			page = waterfall{TraceID: id, Jaeger: base, Problem: "Jaeger has no trace " + id + " (yet: spans arrive a few seconds after they end; reload)."}
		case err != nil:
			w.WriteHeader(http.StatusBadGateway)
			page = waterfall{TraceID: id, Jaeger: base, Problem: "cannot ask Jaeger at " + base + ": " + err.Error()}
		default:
			page = layout(tr)
			page.Jaeger = base
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = pageTemplate.Execute(w, page)
	})
}

func validTraceID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return id != strings.Repeat("0", 32)
}

var errTraceNotFound = errors.New("trace not found")

// The parts of Jaeger's /api/traces/{id} answer (its structured JSON model,
// model/json in jaegertracing/jaeger) that the page uses. Times are in
// microseconds.
type jaegerResponse struct {
	Data   []jaegerTrace `json:"data"`
	Errors []struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	} `json:"errors"`
}

type jaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []jaegerSpan             `json:"spans"`
	Processes map[string]jaegerProcess `json:"processes"`
}

type jaegerSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64       `json:"startTime"`
	Duration  int64       `json:"duration"`
	Tags      []jaegerTag `json:"tags"`
	ProcessID string      `json:"processID"`
}

type jaegerTag struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

type jaegerProcess struct {
	ServiceName string `json:"serviceName"`
}

func fetchTrace(ctx context.Context, client *http.Client, base, id string) (*jaegerTrace, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/traces/"+url.PathEscape(id), nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, errTraceNotFound
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("jaeger answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var jr jaegerResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 32<<20)).Decode(&jr); err != nil {
		return nil, fmt.Errorf("decode jaeger answer: %w", err)
	}
	if len(jr.Data) == 0 || len(jr.Data[0].Spans) == 0 {
		return nil, errTraceNotFound
	}
	return &jr.Data[0], nil
}

type waterfall struct {
	TraceID  string
	Jaeger   string
	Problem  string
	Services []string
	Total    string
	Rows     []row
}

type row struct {
	Service, Operation, Duration, Offset string
	Depth                                int
	Left, Width                          float64 // percent of the trace
	Error                                bool
	Kind                                 string
	Colour                               int
}

// layout orders the spans as a tree (children under their parent, each
// level by start time) and places each bar on the trace's time axis.
func layout(tr *jaegerTrace) waterfall {
	byID := make(map[string]*jaegerSpan, len(tr.Spans))
	start, end := tr.Spans[0].StartTime, tr.Spans[0].StartTime
	for i := range tr.Spans {
		s := &tr.Spans[i]
		byID[s.SpanID] = s
		start = min(start, s.StartTime)
		end = max(end, s.StartTime+s.Duration)
	}
	children := map[string][]*jaegerSpan{}
	var roots []*jaegerSpan
	for i := range tr.Spans {
		s := &tr.Spans[i]
		// The parent is the CHILD_OF reference; failing that a FOLLOWS_FROM
		// one in the same trace: Jaeger reports a consumer's parent that is
		// also its link (StartConsume) as FOLLOWS_FROM.
		parent := ""
		for _, ref := range s.References {
			if ref.TraceID != tr.TraceID || byID[ref.SpanID] == nil {
				continue
			}
			if ref.RefType == "CHILD_OF" {
				parent = ref.SpanID
				break
			}
			if parent == "" {
				parent = ref.SpanID
			}
		}
		if parent == "" {
			roots = append(roots, s)
		} else {
			children[parent] = append(children[parent], s)
		}
	}
	byStart := func(a, b *jaegerSpan) int {
		return cmp.Or(cmp.Compare(a.StartTime, b.StartTime), strings.Compare(a.SpanID, b.SpanID))
	}
	total := max(end-start, 1)
	colours := map[string]int{}
	page := waterfall{TraceID: tr.TraceID, Total: micros(end - start)}
	visited := map[*jaegerSpan]bool{}
	var walk func(s *jaegerSpan, depth int)
	walk = func(s *jaegerSpan, depth int) {
		if visited[s] {
			return
		}
		visited[s] = true
		svc := tr.Processes[s.ProcessID].ServiceName
		if _, ok := colours[svc]; !ok {
			colours[svc] = len(colours) % 8
			page.Services = append(page.Services, svc)
		}
		rw := row{
			Service: svc, Operation: s.OperationName, Depth: depth,
			Duration: micros(s.Duration), Offset: micros(s.StartTime - start),
			Left:   100 * float64(s.StartTime-start) / float64(total),
			Width:  max(100*float64(s.Duration)/float64(total), 0.2),
			Colour: colours[svc],
		}
		rw.Width = min(rw.Width, 100-rw.Left)
		for _, t := range s.Tags {
			switch t.Key {
			case "error":
				rw.Error = rw.Error || t.Value == true || t.Value == "true"
			case "otel.status_code":
				rw.Error = rw.Error || t.Value == "ERROR"
			case "span.kind":
				rw.Kind, _ = t.Value.(string)
			}
		}
		page.Rows = append(page.Rows, rw)
		kids := children[s.SpanID]
		slices.SortFunc(kids, byStart)
		for _, c := range kids {
			walk(c, depth+1)
		}
	}
	slices.SortFunc(roots, byStart)
	for _, s := range roots {
		walk(s, 0)
	}
	// Spans whose references go round in a circle (never from a real
	// tracer) still show, at the top level.
	for i := range tr.Spans {
		walk(&tr.Spans[i], 0)
	}
	return page
}

func micros(us int64) string {
	return (time.Duration(us) * time.Microsecond).Round(10 * time.Microsecond).String()
}

var pageTemplate = template.Must(template.New("trace").Funcs(template.FuncMap{
	"indent": func(depth int) string { return fmt.Sprintf("%.1fem", float64(depth)*1.2) },
	"pct":    func(f float64) string { return fmt.Sprintf("%.3f%%", f) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>trace {{.TraceID}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.2em} code{font-size:.95em}
table{border-collapse:collapse;width:100%} td{padding:2px 6px;white-space:nowrap;vertical-align:middle}
tr:nth-child(even){background:#f6f6f6} td.bar{width:55%;position:relative}
.b{position:absolute;top:4px;height:12px;border-radius:2px}
.err td.op{color:#b00020;font-weight:600} .err .b{outline:2px solid #b00020}
.c0{background:#4e79a7}.c1{background:#f28e2b}.c2{background:#59a14f}.c3{background:#e15759}
.c4{background:#76b7b2}.c5{background:#edc948}.c6{background:#b07aa1}.c7{background:#9c755f}
.svc{display:inline-block;padding:0 6px;margin-right:6px;color:#fff;border-radius:3px}
.muted{color:#777}
</style></head><body>
<h1>trace <code>{{.TraceID}}</code></h1>
{{if .Problem}}<p>{{.Problem}}</p>{{else}}
<p>{{len .Rows}} spans · {{.Total}} ·
{{range $i, $s := .Services}}<span class="svc c{{$i}}">{{$s}}</span>{{end}}
· <span class="muted">from {{.Jaeger}}/api/traces/{{.TraceID}}</span></p>
<table>
<tr><th align="left">service</th><th align="left">span</th><th align="right">start</th><th align="right">duration</th><th></th></tr>
{{range .Rows}}<tr{{if .Error}} class="err"{{end}}>
<td><span class="svc c{{.Colour}}">{{.Service}}</span></td>
<td class="op" style="padding-left:{{indent .Depth}}">{{.Operation}}{{if .Kind}} <span class="muted">{{.Kind}}</span>{{end}}</td>
<td align="right" class="muted">+{{.Offset}}</td><td align="right">{{.Duration}}</td>
<td class="bar"><div class="b c{{.Colour}}" style="left:{{pct .Left}};width:{{pct .Width}}"></div></td>
</tr>
{{end}}</table>{{end}}
</body></html>
`))
