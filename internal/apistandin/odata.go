package apistandin

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// This file holds a small OData $filter parser: comparisons (eq ne gt ge lt
// le), in (...), and/or/not, parentheses, string/number/bool/null/datetime
// literals, navigation paths (a/b/c), lambdas (nav/any(x: ...), nav/all(...))
// and a few string functions. Evaluation lives in eval.go.

type tokKind int

const (
	tokEOF tokKind = iota
	tokIdent
	tokString
	tokNumber
	tokLParen
	tokRParen
	tokComma
	tokColon
	tokSlash
	tokEquals
	tokSemicolon
)

type token struct {
	kind tokKind
	text string // identifier, number text or unquoted string
	pos  int
}

func tokenize(s string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(':
			toks = append(toks, token{tokLParen, "(", i})
			i++
		case c == ')':
			toks = append(toks, token{tokRParen, ")", i})
			i++
		case c == ',':
			toks = append(toks, token{tokComma, ",", i})
			i++
		case c == ':':
			toks = append(toks, token{tokColon, ":", i})
			i++
		case c == '/':
			toks = append(toks, token{tokSlash, "/", i})
			i++
		case c == '=':
			toks = append(toks, token{tokEquals, "=", i})
			i++
		case c == ';':
			toks = append(toks, token{tokSemicolon, ";", i})
			i++
		case c == '\'':
			start := i
			i++
			var b strings.Builder
			closed := false
			for i < len(s) {
				if s[i] == '\'' {
					if i+1 < len(s) && s[i+1] == '\'' {
						b.WriteByte('\'')
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed {
				return nil, fmt.Errorf("unterminated string at %d", start)
			}
			toks = append(toks, token{tokString, b.String(), start})
		case isDigit(c) || (c == '-' && i+1 < len(s) && isDigit(s[i+1])):
			start := i
			i++
			for i < len(s) && (isDigit(s[i]) || s[i] == '.' || s[i] == 'e' || s[i] == 'E' ||
				((s[i] == '+' || s[i] == '-') && (s[i-1] == 'e' || s[i-1] == 'E'))) {
				i++
			}
			toks = append(toks, token{tokNumber, s[start:i], start})
		case isIdentStart(c):
			start := i
			for i < len(s) && isIdentPart(s[i]) {
				i++
			}
			toks = append(toks, token{tokIdent, s[start:i], start})
		default:
			return nil, fmt.Errorf("unexpected character %q at %d", c, i)
		}
	}
	return append(toks, token{tokEOF, "", len(s)}), nil
}

func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c == '_' || c == '$' || c == '@' || isLetter(c) }
func isIdentPart(c byte) bool  { return isIdentStart(c) || isDigit(c) || c == '.' }
func isLetter(c byte) bool     { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

// Expression nodes.
type (
	expr interface{}

	litExpr  struct{ v any } // string, int64, float64, bool, nil, time.Time
	pathExpr struct{ segs []string }
	// lambdaExpr is nav/any(alias: body) or nav/all(alias: body); body nil means any().
	lambdaExpr struct {
		segs  []string
		all   bool
		alias string
		body  expr
	}
	binExpr struct {
		op   string // eq ne gt ge lt le and or
		l, r expr
	}
	notExpr struct{ e expr }
	inExpr  struct {
		l    expr
		list []expr
	}
	callExpr struct {
		fn   string
		args []expr
	}
)

type filterParser struct {
	toks   []token
	i      int
	params func(string) (string, bool) // resolves @alias query parameters
}

// parseFilter parses an OData $filter expression. params resolves
// parameter aliases (@name) to their raw query values; it may be nil.
func parseFilter(s string, params func(string) (string, bool)) (expr, error) {
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	p := &filterParser{toks: toks, params: params}
	e, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if p.peek().kind != tokEOF {
		return nil, fmt.Errorf("unexpected %q at %d", p.peek().text, p.peek().pos)
	}
	return e, nil
}

func (p *filterParser) peek() token { return p.toks[p.i] }
func (p *filterParser) next() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

func (p *filterParser) isKeyword(word string) bool {
	t := p.peek()
	return t.kind == tokIdent && t.text == word
}

func (p *filterParser) expect(k tokKind, what string) error {
	t := p.next()
	if t.kind != k {
		return fmt.Errorf("expected %s at %d, got %q", what, t.pos, t.text)
	}
	return nil
}

func (p *filterParser) parseOr() (expr, error) {
	l, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	for p.isKeyword("or") {
		p.next()
		r, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		l = binExpr{"or", l, r}
	}
	return l, nil
}

func (p *filterParser) parseAnd() (expr, error) {
	l, err := p.parseNot()
	if err != nil {
		return nil, err
	}
	for p.isKeyword("and") {
		p.next()
		r, err := p.parseNot()
		if err != nil {
			return nil, err
		}
		l = binExpr{"and", l, r}
	}
	return l, nil
}

func (p *filterParser) parseNot() (expr, error) {
	if p.isKeyword("not") {
		p.next()
		e, err := p.parseNot()
		if err != nil {
			return nil, err
		}
		return notExpr{e}, nil
	}
	return p.parseCmp()
}

func isComparisonOp(s string) bool {
	switch s {
	case "eq", "ne", "gt", "ge", "lt", "le":
		return true
	}
	return false
}

func (p *filterParser) parseCmp() (expr, error) {
	l, err := p.parsePrimary()
	if err != nil {
		return nil, err
	}
	t := p.peek()
	if t.kind == tokIdent && isComparisonOp(t.text) {
		p.next()
		r, err := p.parsePrimary()
		if err != nil {
			return nil, err
		}
		return binExpr{t.text, l, r}, nil
	}
	if t.kind == tokIdent && t.text == "in" {
		p.next()
		if err := p.expect(tokLParen, "("); err != nil {
			return nil, err
		}
		var list []expr
		for {
			e, err := p.parsePrimary()
			if err != nil {
				return nil, err
			}
			list = append(list, e)
			if p.peek().kind == tokComma {
				p.next()
				continue
			}
			break
		}
		if err := p.expect(tokRParen, ")"); err != nil {
			return nil, err
		}
		return inExpr{l, list}, nil
	}
	return l, nil
}

// funcArity reports the argument count of the supported filter functions.
func funcArity(name string) (int, bool) {
	switch name {
	case "startswith", "endswith", "contains", "substringof":
		return 2, true
	case "tolower", "toupper", "length", "trim":
		return 1, true
	}
	return 0, false
}

func (p *filterParser) parsePrimary() (expr, error) {
	t := p.next()
	switch t.kind {
	case tokLParen:
		e, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if err := p.expect(tokRParen, ")"); err != nil {
			return nil, err
		}
		return e, nil
	case tokString:
		return litExpr{t.text}, nil
	case tokNumber:
		return parseNumberLit(t.text)
	case tokIdent:
		switch t.text {
		case "true":
			return litExpr{true}, nil
		case "false":
			return litExpr{false}, nil
		case "null":
			return litExpr{nil}, nil
		case "datetime", "datetimeoffset":
			if p.peek().kind == tokString {
				s := p.next().text
				tm, ok := parseDateString(s)
				if !ok {
					return nil, fmt.Errorf("invalid datetime literal %q", s)
				}
				return litExpr{tm}, nil
			}
		}
		if strings.HasPrefix(t.text, "@") {
			return p.resolveParam(t)
		}
		if n, ok := funcArity(t.text); ok && p.peek().kind == tokLParen {
			return p.parseCall(t.text, n)
		}
		return p.parsePath(t.text)
	}
	return nil, fmt.Errorf("unexpected %q at %d", t.text, t.pos)
}

func (p *filterParser) resolveParam(t token) (expr, error) {
	if p.params == nil {
		return nil, fmt.Errorf("unknown parameter %s", t.text)
	}
	raw, ok := p.params(t.text)
	if !ok {
		return nil, fmt.Errorf("unknown parameter %s", t.text)
	}
	sub := &filterParser{params: nil}
	toks, err := tokenize(raw)
	if err != nil {
		return nil, err
	}
	sub.toks = toks
	e, err := sub.parsePrimary()
	if err != nil {
		return nil, err
	}
	if _, ok := e.(litExpr); !ok || sub.peek().kind != tokEOF {
		return nil, fmt.Errorf("parameter %s is not a literal", t.text)
	}
	return e, nil
}

func (p *filterParser) parseCall(fn string, n int) (expr, error) {
	p.next() // (
	var args []expr
	for i := 0; i < n; i++ {
		if i > 0 {
			if err := p.expect(tokComma, ","); err != nil {
				return nil, err
			}
		}
		e, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		args = append(args, e)
	}
	if err := p.expect(tokRParen, ")"); err != nil {
		return nil, err
	}
	return callExpr{fn, args}, nil
}

func (p *filterParser) parsePath(first string) (expr, error) {
	segs := []string{first}
	for p.peek().kind == tokSlash {
		p.next()
		t := p.next()
		if t.kind != tokIdent {
			return nil, fmt.Errorf("expected a name after / at %d", t.pos)
		}
		if (t.text == "any" || t.text == "all") && p.peek().kind == tokLParen {
			return p.parseLambda(segs, t.text == "all")
		}
		segs = append(segs, t.text)
	}
	return pathExpr{segs}, nil
}

func (p *filterParser) parseLambda(segs []string, all bool) (expr, error) {
	p.next() // (
	if p.peek().kind == tokRParen {
		p.next()
		if all {
			return nil, fmt.Errorf("all() needs a predicate")
		}
		return lambdaExpr{segs: segs}, nil
	}
	a := p.next()
	if a.kind != tokIdent {
		return nil, fmt.Errorf("expected a lambda variable at %d", a.pos)
	}
	if err := p.expect(tokColon, ":"); err != nil {
		return nil, err
	}
	body, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if err := p.expect(tokRParen, ")"); err != nil {
		return nil, err
	}
	return lambdaExpr{segs: segs, all: all, alias: a.text, body: body}, nil
}

func parseNumberLit(s string) (expr, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return litExpr{n}, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, fmt.Errorf("invalid number %q", s)
	}
	return litExpr{f}, nil
}

// parseDateString parses the ISO-8601 strings clients send (and RFC 1123,
// which JavaScript's Date also reads). Zone-less date-times are taken as UTC.
func parseDateString(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	layouts := []string{
		time.RFC3339Nano,
		"2006-01-02T15:04:05.999999999",
		"2006-01-02T15:04",
		"2006-01-02T15:04Z07:00",
		"2006-01-02",
		"2006-01",
		time.RFC1123,
		time.RFC1123Z,
	}
	for _, l := range layouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}
