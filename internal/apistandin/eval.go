package apistandin

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// evalCtx evaluates filters and renders rows against one database state,
// with the permissions of one caller (u nil: unauthenticated).
type evalCtx struct {
	s  *Server
	st *state
	u  *user
}

type bound struct {
	t *table
	r row
}

// scope is the row an expression is evaluated on, plus lambda variables.
type scope struct {
	t       *table
	r       row
	aliases map[string]bound
}

// badQuery is a query the stand-in cannot resolve (unknown field,
// navigation or malformed option): answered with 400.
type badQuery struct{ msg string }

func (e badQuery) Error() string { return e.msg }

func badQueryf(format string, args ...any) error { return badQuery{fmt.Sprintf(format, args...)} }

// canRead is the read permission: device types and friends are public,
// users see only themselves, everything else needs an authenticated user
// (open-balena's default-user role has unfiltered read on the rest).
func (c *evalCtx) canRead(t *table, r row) bool {
	switch {
	case t.public:
		return true
	case c.u == nil:
		return t.name == "application" && r.boolean("is_public")
	case t.name == "user":
		return r.id() == c.u.id
	}
	return true
}

// value returns a stored or computed field of a row.
func (c *evalCtx) value(t *table, r row, name string) (any, bool) {
	if _, ok := t.field(name); ok {
		return r[name], true
	}
	if t.isComputed(name) {
		return c.s.computed(c.st, t, r, name), true
	}
	return nil, false
}

// follow resolves a navigation from a row: the readable target rows and
// whether the navigation is to-one.
func (c *evalCtx) follow(t *table, r row, name string) (*table, []row, bool, error) {
	n, ok := t.navs[name]
	if !ok {
		return nil, nil, false, badQueryf("unknown navigation %q on %s", name, t.name)
	}
	target := c.s.schema.tables[n.target]
	var out []row
	switch {
	case n.local != "":
		if id, ok := r[n.local].(int64); ok {
			if tr, ok := c.st.get(n.target, id); ok && c.canRead(target, tr) {
				out = append(out, tr)
			}
		}
		return target, out, true, nil
	case n.remote != "":
		for _, tr := range c.st.rows(n.target) {
			if id, ok := tr[n.remote].(int64); ok && id == r.id() && c.canRead(target, tr) {
				out = append(out, tr)
			}
		}
		return target, out, false, nil
	default: // is_directly_accessible_by__user: every user reaches every fleet
		if c.u != nil {
			out = append(out, row{"id": c.u.id, "user": c.u.id, "has_direct_access_to__application": r.id()})
		}
		return target, out, false, nil
	}
}

func (c *evalCtx) truthy(e expr, sc scope) (bool, error) {
	v, err := c.eval(e, sc)
	if err != nil {
		return false, err
	}
	b, _ := v.(bool)
	return b, nil
}

func (c *evalCtx) eval(e expr, sc scope) (any, error) {
	switch x := e.(type) {
	case litExpr:
		return x.v, nil
	case pathExpr:
		return c.path(x.segs, sc)
	case lambdaExpr:
		return c.lambda(x, sc)
	case notExpr:
		b, err := c.truthy(x.e, sc)
		return !b, err
	case binExpr:
		switch x.op {
		case "and", "or":
			l, err := c.truthy(x.l, sc)
			if err != nil {
				return nil, err
			}
			if (x.op == "and" && !l) || (x.op == "or" && l) {
				return l, nil
			}
			return c.truthy(x.r, sc)
		}
		l, err := c.eval(x.l, sc)
		if err != nil {
			return nil, err
		}
		r, err := c.eval(x.r, sc)
		if err != nil {
			return nil, err
		}
		return compareValues(x.op, l, r), nil
	case inExpr:
		l, err := c.eval(x.l, sc)
		if err != nil {
			return nil, err
		}
		for _, item := range x.list {
			v, err := c.eval(item, sc)
			if err != nil {
				return nil, err
			}
			if compareValues("eq", l, v) {
				return true, nil
			}
		}
		return false, nil
	case callExpr:
		return c.call(x, sc)
	}
	return nil, badQueryf("unsupported expression")
}

func (c *evalCtx) start(segs []string, sc scope) (*table, row, []string) {
	if b, ok := sc.aliases[segs[0]]; ok {
		return b.t, b.r, segs[1:]
	}
	return sc.t, sc.r, segs
}

func (c *evalCtx) path(segs []string, sc scope) (any, error) {
	t, r, segs := c.start(segs, sc)
	if len(segs) == 0 {
		return nil, badQueryf("a lambda variable is not a value")
	}
	for i, seg := range segs {
		if i == len(segs)-1 {
			v, ok := c.value(t, r, seg)
			if !ok {
				return nil, badQueryf("unknown field %q on %s", seg, t.name)
			}
			return v, nil
		}
		nt, rows, toOne, err := c.follow(t, r, seg)
		if err != nil {
			return nil, err
		}
		if !toOne {
			return nil, badQueryf("navigation %q is to-many: use any() or all()", seg)
		}
		if len(rows) == 0 {
			return nil, nil
		}
		t, r = nt, rows[0]
	}
	return nil, nil
}

func (c *evalCtx) lambda(l lambdaExpr, sc scope) (bool, error) {
	t, r, segs := c.start(l.segs, sc)
	if len(segs) == 0 {
		return false, badQueryf("any()/all() needs a navigation")
	}
	for _, seg := range segs[:len(segs)-1] {
		nt, rows, toOne, err := c.follow(t, r, seg)
		if err != nil {
			return false, err
		}
		if !toOne {
			return false, badQueryf("navigation %q is to-many", seg)
		}
		if len(rows) == 0 {
			return l.all, nil
		}
		t, r = nt, rows[0]
	}
	nt, rows, _, err := c.follow(t, r, segs[len(segs)-1])
	if err != nil {
		return false, err
	}
	if l.body == nil {
		return len(rows) > 0, nil
	}
	for _, rr := range rows {
		aliases := map[string]bound{l.alias: {nt, rr}}
		for k, v := range sc.aliases {
			if k != l.alias {
				aliases[k] = v
			}
		}
		ok, err := c.truthy(l.body, scope{t: sc.t, r: sc.r, aliases: aliases})
		if err != nil {
			return false, err
		}
		if l.all && !ok {
			return false, nil
		}
		if !l.all && ok {
			return true, nil
		}
	}
	return l.all, nil
}

func (c *evalCtx) call(x callExpr, sc scope) (any, error) {
	args := make([]any, len(x.args))
	for i, a := range x.args {
		v, err := c.eval(a, sc)
		if err != nil {
			return nil, err
		}
		args[i] = v
	}
	str := func(i int) (string, bool) {
		s, ok := args[i].(string)
		return s, ok
	}
	a, aok := str(0)
	if len(args) == 1 {
		if !aok {
			return nil, nil
		}
		switch x.fn {
		case "tolower":
			return strings.ToLower(a), nil
		case "toupper":
			return strings.ToUpper(a), nil
		case "trim":
			return strings.TrimSpace(a), nil
		case "length":
			return int64(utf8.RuneCountInString(a)), nil
		}
	}
	b, bok := str(1)
	if !aok || !bok {
		return false, nil
	}
	switch x.fn {
	case "startswith":
		return strings.HasPrefix(a, b), nil
	case "endswith":
		return strings.HasSuffix(a, b), nil
	case "contains":
		return strings.Contains(a, b), nil
	case "substringof":
		return strings.Contains(b, a), nil
	}
	return nil, badQueryf("unsupported function %s", x.fn)
}

// compareValues applies an OData comparison. eq/ne are null-safe; the
// ordering operators are false when either side is null.
func compareValues(op string, a, b any) bool {
	if a == nil || b == nil {
		switch op {
		case "eq":
			return a == nil && b == nil
		case "ne":
			return !(a == nil && b == nil)
		}
		return false
	}
	c, ok := order(a, b)
	if !ok {
		return op == "ne"
	}
	switch op {
	case "eq":
		return c == 0
	case "ne":
		return c != 0
	case "gt":
		return c > 0
	case "ge":
		return c >= 0
	case "lt":
		return c < 0
	case "le":
		return c <= 0
	}
	return false
}

// order compares two non-null values of compatible types.
func order(a, b any) (int, bool) {
	if ta, ok := a.(time.Time); ok {
		tb, ok := toTime(b)
		if !ok {
			return 0, false
		}
		return ta.Compare(tb), true
	}
	if _, ok := b.(time.Time); ok {
		c, ok := order(b, a)
		return -c, ok
	}
	if fa, ok := toFloat(a); ok {
		if fb, ok := toFloat(b); ok {
			switch {
			case fa < fb:
				return -1, true
			case fa > fb:
				return 1, true
			}
			return 0, true
		}
		return 0, false
	}
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		if !ok {
			return 0, false
		}
		return strings.Compare(x, y), true
	case bool:
		y, ok := b.(bool)
		if !ok {
			return 0, false
		}
		switch {
		case x == y:
			return 0, true
		case !x:
			return -1, true
		}
		return 1, true
	case json.RawMessage:
		return strings.Compare(string(x), fmt.Sprint(b)), true
	}
	return 0, false
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

func toTime(v any) (time.Time, bool) {
	switch x := v.(type) {
	case time.Time:
		return x, true
	case string:
		return parseDateString(x)
	case int64:
		return time.UnixMilli(x).UTC(), true
	}
	return time.Time{}, false
}

// sortRows orders rows by $orderby (PostgreSQL: NULLs last ascending,
// first descending), then by id.
func (c *evalCtx) sortRows(t *table, rows []row, items []orderItem) error {
	type keyed struct {
		r    row
		keys []any
	}
	ks := make([]keyed, len(rows))
	for i, r := range rows {
		ks[i].r = r
		for _, it := range items {
			v, err := c.path(it.segs, scope{t: t, r: r})
			if err != nil {
				return err
			}
			ks[i].keys = append(ks[i].keys, v)
		}
	}
	sort.SliceStable(ks, func(i, j int) bool {
		for n, it := range items {
			a, b := ks[i].keys[n], ks[j].keys[n]
			var cmp int
			switch {
			case a == nil && b == nil:
				cmp = 0
			case a == nil:
				cmp = 1 // NULLS LAST for asc
			case b == nil:
				cmp = -1
			default:
				cmp, _ = order(a, b)
			}
			if it.desc {
				cmp = -cmp
			}
			if cmp != 0 {
				return cmp < 0
			}
		}
		return ks[i].r.id() < ks[j].r.id()
	})
	for i := range ks {
		rows[i] = ks[i].r
	}
	return nil
}
