package apistandin

import (
	"sort"
	"strings"
)

// state is the whole database. Writes run on a clone that replaces the
// live state only when every constraint, rule and hook succeeded, which
// gives each request the all-or-nothing behaviour of a transaction.
type state struct {
	tables map[string]map[int64]row
}

func newState(sc *schema) *state {
	st := &state{tables: map[string]map[int64]row{}}
	for name := range sc.tables {
		st.tables[name] = map[int64]row{}
	}
	return st
}

// clone copies the table maps; rows are shared, so a row must be cloned
// before it is modified (put always stores a new row).
func (st *state) clone() *state {
	c := &state{tables: make(map[string]map[int64]row, len(st.tables))}
	for name, rows := range st.tables {
		m := make(map[int64]row, len(rows))
		for id, r := range rows {
			m[id] = r
		}
		c.tables[name] = m
	}
	return c
}

func (st *state) get(table string, id int64) (row, bool) {
	r, ok := st.tables[table][id]
	return r, ok
}

func (st *state) put(table string, r row) { st.tables[table][r.id()] = r }

// rows returns a table's rows ordered by id.
func (st *state) rows(table string) []row {
	m := st.tables[table]
	out := make([]row, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id() < out[j].id() })
	return out
}

// apiError is an HTTP error answer: a JSON-encoded string body, or an
// empty body when body is nil.
type apiError struct {
	status      int
	body        []byte
	contentType string
}

func (e *apiError) Error() string { return string(e.body) }

func jsonError(status int, msg string) *apiError {
	b, _ := marshal(msg)
	return &apiError{status: status, body: b, contentType: "application/json; charset=utf-8"}
}

func emptyError(status int) *apiError { return &apiError{status: status} }

func htmlError(status int, text string) *apiError {
	body := "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n" +
		"</head>\n<body>\n<pre>" + text + "</pre>\n</body>\n</html>\n"
	return &apiError{status: status, body: []byte(body), contentType: "text/html; charset=utf-8"}
}

// checkRow enforces the database constraints of one inserted or updated
// row, in PostgreSQL's order: NOT NULL, CHECK, UNIQUE, FOREIGN KEY.
func (st *state) checkRow(t *table, r row) *apiError {
	for _, f := range t.fields {
		if f.required && r[f.name] == nil {
			return emptyError(500)
		}
	}
	for _, f := range t.fields {
		if f.enum == nil || r[f.name] == nil {
			continue
		}
		if !contains(f.enum, r.str(f.name)) {
			return jsonError(400, "Check constraint violated")
		}
	}
	for _, u := range t.unique {
		if st.violatesUnique(t, r, u) {
			return jsonError(409, "\""+strings.Join(u, "\" and \"")+"\" must be unique.")
		}
	}
	for _, f := range t.fields {
		if f.kind != kFK || r[f.name] == nil {
			continue
		}
		if _, modelled := st.tables[f.ref]; !modelled {
			continue
		}
		if _, ok := st.get(f.ref, r.int(f.name)); !ok {
			return jsonError(409, "Data is referenced by "+f.name+".")
		}
	}
	return nil
}

func (st *state) violatesUnique(t *table, r row, cols []string) bool {
	for _, c := range cols {
		if r[c] == nil {
			return false // NULLs never collide
		}
	}
	for id, o := range st.tables[t.name] {
		if id == r.id() {
			continue
		}
		same := true
		for _, c := range cols {
			if o[c] != r[c] {
				same = false
				break
			}
		}
		if same {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}
