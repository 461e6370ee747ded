package apistandin

import (
	"net/url"
	"strconv"
	"strings"
)

// params are the raw query parameters. They are split by hand because the
// OData options carry ';' (e.g. $expand=a($select=b;$expand=c)), which
// net/url refuses as a separator.
type params map[string][]string

func parseParams(raw string) params {
	p := params{}
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if uv, err := url.QueryUnescape(v); err == nil {
			v = uv
		}
		p[k] = append(p[k], v)
	}
	return p
}

func (p params) get(k string) (string, bool) {
	v, ok := p[k]
	if !ok || len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// query holds the OData query options of a request or of one $expand.
type query struct {
	sel     []string // nil: every field
	expand  []expandItem
	filter  expr
	orderby []orderItem
	top     int // -1: none
	skip    int
}

type expandItem struct {
	nav   string
	count bool // nav/$count
	q     query
}

type orderItem struct {
	segs []string
	desc bool
}

// parseQuery reads $select, $expand, $filter, $orderby, $top and $skip.
func parseQuery(get func(string) (string, bool), aliases func(string) (string, bool)) (query, error) {
	q := query{top: -1}
	if v, ok := get("$select"); ok && strings.TrimSpace(v) != "*" {
		for _, f := range splitTop(v, ',') {
			if f = strings.TrimSpace(f); f != "" {
				q.sel = append(q.sel, f)
			}
		}
	}
	if v, ok := get("$expand"); ok {
		for _, item := range splitTop(v, ',') {
			ex, err := parseExpandItem(strings.TrimSpace(item), aliases)
			if err != nil {
				return q, err
			}
			q.expand = append(q.expand, ex)
		}
	}
	if v, ok := get("$filter"); ok {
		e, err := parseFilter(v, aliases)
		if err != nil {
			return q, badQueryf("$filter: %v", err)
		}
		q.filter = e
	}
	if v, ok := get("$orderby"); ok {
		for _, item := range splitTop(v, ',') {
			fs := strings.Fields(item)
			if len(fs) == 0 || len(fs) > 2 || (len(fs) == 2 && fs[1] != "asc" && fs[1] != "desc") {
				return q, badQueryf("$orderby: bad item %q", item)
			}
			q.orderby = append(q.orderby, orderItem{segs: strings.Split(fs[0], "/"), desc: len(fs) == 2 && fs[1] == "desc"})
		}
	}
	for _, o := range []struct {
		name string
		dst  *int
	}{{"$top", &q.top}, {"$skip", &q.skip}} {
		if v, ok := get(o.name); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 0 {
				return q, badQueryf("%s: bad number %q", o.name, v)
			}
			*o.dst = n
		}
	}
	return q, nil
}

func parseExpandItem(s string, aliases func(string) (string, bool)) (expandItem, error) {
	name, opts := s, ""
	if i := strings.IndexByte(s, '('); i >= 0 {
		if !strings.HasSuffix(s, ")") {
			return expandItem{}, badQueryf("$expand: unbalanced %q", s)
		}
		name, opts = s[:i], s[i+1:len(s)-1]
	}
	name = strings.TrimSpace(name)
	ex := expandItem{nav: name}
	if n, ok := strings.CutSuffix(name, "/$count"); ok {
		ex.nav, ex.count = n, true
	}
	kv := map[string]string{}
	for _, o := range splitTop(opts, ';') {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			return ex, badQueryf("$expand: bad option %q", o)
		}
		kv[strings.TrimSpace(k)] = v
	}
	q, err := parseQuery(func(k string) (string, bool) { v, ok := kv[k]; return v, ok }, aliases)
	if err != nil {
		return ex, err
	}
	ex.q = q
	return ex, nil
}

// splitTop splits on sep outside parentheses and quoted strings.
func splitTop(s string, sep byte) []string {
	var out []string
	depth, start, inStr := 0, 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\'':
			inStr = !inStr
		case inStr:
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == sep && depth == 0:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// selectRows returns the readable rows of t matching every given filter,
// ordered and paged by q.
func (c *evalCtx) selectRows(t *table, q query, filters ...expr) ([]row, error) {
	return c.filterRows(t, c.st.rows(t.name), q, filters...)
}

func (c *evalCtx) filterRows(t *table, rows []row, q query, filters ...expr) ([]row, error) {
	if q.filter != nil {
		filters = append(filters, q.filter)
	}
	var out []row
	for _, r := range rows {
		if !c.canRead(t, r) {
			continue
		}
		keep := true
		for _, f := range filters {
			ok, err := c.truthy(f, scope{t: t, r: r})
			if err != nil {
				return nil, err
			}
			if !ok {
				keep = false
				break
			}
		}
		if keep {
			out = append(out, r)
		}
	}
	if err := c.sortRows(t, out, q.orderby); err != nil {
		return nil, err
	}
	if q.skip > 0 {
		if q.skip >= len(out) {
			out = nil
		} else {
			out = out[q.skip:]
		}
	}
	if q.top >= 0 && q.top < len(out) {
		out = out[:q.top]
	}
	return out, nil
}

// render renders a row as a v7 GET returns it: stored fields in model
// order (FKs as {"__id":N}, expanded navigations as arrays), then computed
// fields, then other expansions.
func (c *evalCtx) render(t *table, r row, q query) (object, error) {
	for _, name := range q.sel {
		if _, ok := c.value(t, r, name); !ok {
			if _, isNav := t.navs[name]; !isNav {
				return nil, badQueryf("$select: unknown field %q on %s", name, t.name)
			}
		}
	}
	selected := func(name string) bool { return q.sel == nil || contains(q.sel, name) }
	done := map[string]bool{}
	var o object
	emit := func(name string, plain func() any) error {
		for _, ex := range q.expand {
			if ex.nav == name {
				v, err := c.renderExpand(t, r, ex)
				if err != nil {
					return err
				}
				o = append(o, kv{name, v})
				done[name] = true
				return nil
			}
		}
		if selected(name) {
			o = append(o, kv{name, plain()})
		}
		return nil
	}
	for _, f := range t.fields {
		f := f
		if err := emit(f.name, func() any { return renderValue(f, r[f.name]) }); err != nil {
			return nil, err
		}
	}
	for _, name := range t.computed {
		name := name
		if err := emit(name, func() any { return c.s.computed(c.st, t, r, name) }); err != nil {
			return nil, err
		}
	}
	for _, ex := range q.expand {
		if done[ex.nav] {
			continue
		}
		v, err := c.renderExpand(t, r, ex)
		if err != nil {
			return nil, err
		}
		o = append(o, kv{ex.nav, v})
	}
	return o, nil
}

func (c *evalCtx) renderExpand(t *table, r row, ex expandItem) (any, error) {
	nt, rows, _, err := c.follow(t, r, ex.nav)
	if err != nil {
		return nil, err
	}
	rows, err = c.filterRows(nt, rows, ex.q)
	if err != nil {
		return nil, err
	}
	if ex.count {
		return len(rows), nil
	}
	out := make([]object, 0, len(rows))
	for _, rr := range rows {
		o, err := c.render(nt, rr, ex.q)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}
