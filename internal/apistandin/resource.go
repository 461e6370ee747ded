package apistandin

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// target is the parsed /v7/<resource>[(<key>)][/$count] path.
type target struct {
	resource string
	t        *table
	key      expr // nil: no key
	count    bool
}

func (s *Server) parseTarget(escapedPath string, p params) (target, error) {
	rest := strings.TrimPrefix(escapedPath, "/v7/")
	var tg target
	if r, ok := strings.CutSuffix(rest, "/$count"); ok {
		rest, tg.count = r, true
	}
	name := rest
	if i := strings.IndexByte(rest, '('); i >= 0 {
		if !strings.HasSuffix(rest, ")") {
			return tg, errNotFound
		}
		name = rest[:i]
		keyText, err := url.PathUnescape(rest[i+1 : len(rest)-1])
		if err != nil {
			return tg, badQueryf("bad key: %v", err)
		}
		key, err := parseKey(keyText, p)
		if err != nil {
			return tg, err
		}
		tg.key = key
	}
	t, ok := s.schema.resolve(name)
	if !ok {
		return tg, errNotFound
	}
	tg.resource, tg.t = name, t
	return tg, nil
}

var errNotFound = errors.New("not found")

// parseKey parses a resource key: N, @alias (from the query) or the
// natural-key form name=literal[,name=literal...].
func parseKey(s string, p params) (expr, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "@") {
		v, ok := p.get(s)
		if !ok {
			return nil, badQueryf("unknown parameter %s", s)
		}
		s = v
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return binExpr{"eq", pathExpr{[]string{"id"}}, litExpr{n}}, nil
	}
	var out expr
	for _, part := range splitTop(s, ',') {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, badQueryf("bad key %q", s)
		}
		lit, err := parseFilter(strings.TrimSpace(v), nil)
		if err != nil {
			return nil, badQueryf("bad key %q: %v", s, err)
		}
		if _, isLit := lit.(litExpr); !isLit {
			return nil, badQueryf("bad key %q", s)
		}
		e := binExpr{"eq", pathExpr{[]string{strings.TrimSpace(k)}}, lit}
		if out == nil {
			out = e
		} else {
			out = binExpr{"and", out, e}
		}
	}
	return out, nil
}

func queryError(w http.ResponseWriter, err error) {
	var bq badQuery
	if errors.As(err, &bq) {
		writeError(w, jsonError(400, "apistandin: "+bq.msg))
		return
	}
	writeError(w, emptyError(404))
}

func (s *Server) serveOData(w http.ResponseWriter, r *http.Request, p params, body any) {
	tg, err := s.parseTarget(r.URL.EscapedPath(), p)
	if err != nil {
		queryError(w, err)
		return
	}
	u := s.authenticate(r, p)
	w.Header().Set("Cache-Control", "no-cache")
	switch r.Method {
	case http.MethodGet:
		s.handleGet(w, tg, p, u)
	case http.MethodPost:
		if tg.key != nil || tg.count {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		s.handlePost(w, tg, p, body, u)
	case http.MethodPatch, "MERGE":
		s.handlePatch(w, tg, p, body, u)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (s *Server) handleGet(w http.ResponseWriter, tg target, p params, u *user) {
	q, err := parseQuery(p.get, p.get)
	if err != nil {
		queryError(w, err)
		return
	}
	c := &evalCtx{s: s, st: s.st, u: u}
	var filters []expr
	if tg.key != nil {
		filters = append(filters, tg.key)
	}
	rows, err := c.selectRows(tg.t, q, filters...)
	if err != nil {
		queryError(w, err)
		return
	}
	if tg.count {
		writeJSON(w, 200, object{{"d", len(rows)}})
		return
	}
	out := make([]object, 0, len(rows))
	for _, rr := range rows {
		o, err := c.render(tg.t, rr, q)
		if err != nil {
			queryError(w, err)
			return
		}
		out = append(out, o)
	}
	writeJSON(w, 200, object{{"d", out}})
}

// pick returns the body values of the client-writable fields of t;
// unknown fields are ignored, as pinejs does.
func pick(t *table, body any) map[string]any {
	m, _ := body.(map[string]any)
	raw := map[string]any{}
	for _, f := range t.fields {
		if v, ok := m[f.name]; ok && !f.readOnly {
			raw[f.name] = v
		}
	}
	return raw
}

// coerceAll validates raw values; the error is pinejs's 400 `"field" ...`.
func coerceAll(t *table, raw map[string]any) (map[string]any, *apiError) {
	names := make([]string, 0, len(raw))
	for k := range raw {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return fieldIndex(t, names[i]) < fieldIndex(t, names[j]) })
	vals := map[string]any{}
	for _, name := range names {
		f, _ := t.field(name)
		v, err := coerce(f, raw[name])
		if errors.Is(err, errDatabase) {
			return nil, emptyError(500)
		}
		if err != nil {
			return nil, jsonError(400, fmt.Sprintf("%q %s", name, err.Error()))
		}
		vals[name] = v
	}
	return vals, nil
}

func fieldIndex(t *table, name string) int {
	for i, f := range t.fields {
		if f.name == name {
			return i
		}
	}
	return len(t.fields)
}

func setValues(r row, vals map[string]any) {
	for k, v := range vals {
		if v == nil {
			delete(r, k)
		} else {
			r[k] = v
		}
	}
}

func (s *Server) handlePost(w http.ResponseWriter, tg target, p params, body any, u *user) {
	if u == nil || !tg.t.postable {
		writeError(w, emptyError(401))
		return
	}
	t, now := tg.t, s.now()
	raw := pick(t, body)
	var rc *releaseCustom
	switch t.name {
	case "release":
		var aerr *apiError
		if rc, aerr = s.releaseParse(raw, body, now, true); aerr != nil {
			writeError(w, aerr)
			return
		}
	case "image":
		if aerr := s.imagePostParse(raw); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	vals, aerr := coerceAll(t, raw)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	tx := s.st.clone()
	id := s.nextID(t.name) // the sequence advances even when the insert fails
	r := row{"id": id, "created_at": now, "modified_at": now}
	for _, f := range t.fields {
		if f.def != nil {
			r[f.name] = f.def
		}
	}
	setValues(r, vals)
	if aerr := tx.checkRow(t, r); aerr != nil {
		writeError(w, aerr)
		return
	}
	tx.put(t.name, r)
	if aerr := checkRules(tx); aerr != nil {
		writeError(w, aerr)
		return
	}
	if t.name == "release" {
		if aerr := s.releasePostRun(tx, id, rc, now); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	s.st = tx

	c := &evalCtx{s: s, st: s.st, u: u}
	created, _ := s.st.get(t.name, id)
	o, err := c.render(t, created, query{top: -1})
	if err != nil {
		writeError(w, emptyError(500))
		return
	}
	if v, ok := p.get("returnResource"); ok && (v == "false" || v == "0") {
		o = object{{"id", id}}
	}
	w.Header().Set("Location", fmt.Sprintf("/v7/%s(@id)?@id=%d", tg.resource, id))
	writeJSON(w, http.StatusCreated, o)
}

func (s *Server) handlePatch(w http.ResponseWriter, tg target, p params, body any, u *user) {
	if u == nil || !tg.t.patchable {
		writeError(w, emptyError(401))
		return
	}
	if tg.count {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	t, now := tg.t, s.now()
	q, err := parseQuery(p.get, p.get)
	if err != nil {
		queryError(w, err)
		return
	}
	raw := pick(t, body)
	var rc *releaseCustom
	if t.name == "release" {
		var aerr *apiError
		if rc, aerr = s.releaseParse(raw, body, now, false); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	tx := s.st.clone()
	c := &evalCtx{s: s, st: tx, u: u}
	var filters []expr
	if tg.key != nil {
		filters = append(filters, tg.key)
	}
	affected, err := c.selectRows(t, query{filter: q.filter, top: -1}, filters...)
	if err != nil {
		queryError(w, err)
		return
	}
	ids := make([]int64, len(affected))
	for i, r := range affected {
		ids[i] = r.id()
	}
	var plan *revisionPlan
	if t.name == "release" {
		var aerr *apiError
		if plan, aerr = s.releasePreRun(tx, ids, raw, rc); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	vals, aerr := coerceAll(t, raw)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	for _, id := range ids {
		cur, _ := tx.get(t.name, id)
		r := cur.clone()
		setValues(r, vals)
		r["modified_at"] = now
		if aerr := tx.checkRow(t, r); aerr != nil {
			writeError(w, aerr)
			return
		}
		tx.put(t.name, r)
	}
	if len(ids) > 0 {
		if aerr := checkRules(tx); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	if t.name == "release" {
		if aerr := s.releasePatchPostRun(tx, ids, raw, rc, plan, now); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	s.st = tx
	w.WriteHeader(http.StatusOK)
}

// touch stores a modified copy of a row, as an internal root PATCH does.
func touch(tx *state, table string, id int64, now time.Time, vals map[string]any) {
	cur, ok := tx.get(table, id)
	if !ok {
		return
	}
	r := cur.clone()
	setValues(r, vals)
	r["modified_at"] = now
	tx.put(table, r)
}
