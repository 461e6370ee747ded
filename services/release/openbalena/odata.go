package openbalena

import (
	"strings"
	"time"
)

// list is pinejs's GET answer: {"d":[...]}.
type list[T any] struct {
	D []T `json:"d"`
}

// ref is an unexpanded foreign key: {"__id": N}.
type ref struct {
	ID int64 `json:"__id"`
}

// param is one query parameter; order is kept, keys go out literally
// ($filter, $select, ...).
type param struct{ key, value string }

// encodeQuery writes params the way pinejs-client does (encodeURIComponent):
// a space is %20, never '+', which the OData parser would keep as a '+'.
func encodeQuery(params []param) string {
	var b strings.Builder
	for i, p := range params {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.key)
		b.WriteByte('=')
		b.WriteString(uriComponent(p.value))
	}
	return b.String()
}

// uriComponent is JavaScript's encodeURIComponent.
func uriComponent(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// quote is an OData string literal: single quotes, ' doubled.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// epochMS is how timestamps are written (the API takes epoch milliseconds).
func epochMS(t time.Time) int64 { return t.UnixMilli() }
