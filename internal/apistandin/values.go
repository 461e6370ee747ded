package apistandin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
)

// Stored value representation in a row (map[string]any):
//   kSerial, kInt, kFK, kBigInt: int64
//   kShortText, kText:          string
//   kBool:                      bool
//   kDate:                      time.Time (UTC, millisecond precision)
//   kJSON:                      json.RawMessage
// A missing key or nil is NULL.

type row map[string]any

func (r row) clone() row {
	c := make(row, len(r))
	for k, v := range r {
		c[k] = v
	}
	return c
}

func (r row) id() int64 { return r.int("id") }

func (r row) int(name string) int64 {
	v, _ := r[name].(int64)
	return v
}

func (r row) str(name string) string {
	v, _ := r[name].(string)
	return v
}

func (r row) boolean(name string) bool {
	v, _ := r[name].(bool)
	return v
}

func (r row) isNull(name string) bool { return r[name] == nil }

// errDatabase marks an error the database would raise (NOT NULL, out of
// range): pinejs answers those with 500 and an empty body.
var errDatabase = errors.New("database error")

// coerce validates a client-supplied JSON value for a field the way
// @balena/sbvr-types does and returns the stored representation. The error
// text is what pinejs puts after the quoted field name.
func coerce(f field, v any) (any, error) {
	if v == nil {
		if f.required {
			return nil, errors.New("cannot be null")
		}
		return nil, nil
	}
	switch f.kind {
	case kInt, kFK, kSerial:
		n, ok := jsParseInt(v)
		if !ok {
			return nil, fmt.Errorf("is not a number: %s", jsString(v))
		}
		if n < math.MinInt32 || n > math.MaxInt32 {
			return nil, errDatabase // integer out of range
		}
		return n, nil
	case kBigInt:
		return coerceBigInt(v)
	case kShortText, kText:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("is not a string: %s", jsString(v))
		}
		if f.kind == kShortText {
			if n := len(utf16.Encode([]rune(s))); n > 255 {
				return nil, fmt.Errorf("longer than 255 characters (%d)", n)
			}
		}
		return s, nil
	case kBool:
		n, ok := jsNumber(v)
		if !ok || (n != 0 && n != 1) {
			b, _ := json.Marshal(v)
			return nil, fmt.Errorf("is not a boolean: %s (%s)", b, jsTypeof(v))
		}
		return n == 1, nil
	case kDate:
		return coerceDate(v)
	case kJSON:
		switch v.(type) {
		case map[string]any, []any:
		default:
			return nil, fmt.Errorf("is not an object/array: %s", jsTypeof(v))
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("cannot be turned into JSON: %s", jsString(v))
		}
		return json.RawMessage(b), nil
	}
	return nil, fmt.Errorf("unsupported type")
}

func coerceBigInt(v any) (any, error) {
	var n *big.Int
	switch x := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if i, ierr := strconv.ParseInt(string(x), 10, 64); ierr == nil {
			n = big.NewInt(i)
		} else if err == nil && f == math.Trunc(f) && !math.IsInf(f, 0) {
			n, _ = new(big.Float).SetFloat64(f).Int(nil)
		} else {
			return nil, fmt.Errorf("The number %s cannot be converted to a BigInt because it is not an integer", x)
		}
	case string:
		if x == "" {
			return nil, errors.New("Cannot convert empty string to a BigInt")
		}
		s := strings.TrimSpace(x)
		var ok bool
		if s == "" {
			n, ok = big.NewInt(0), true
		} else if len(s) > 2 && s[0] == '0' && strings.ContainsRune("xXoObB", rune(s[1])) {
			n, ok = new(big.Int).SetString(s, 0)
		} else {
			n, ok = new(big.Int).SetString(s, 10)
		}
		if !ok {
			return nil, fmt.Errorf("Cannot convert %s to a BigInt", x)
		}
	case bool:
		if x {
			n = big.NewInt(1)
		} else {
			n = big.NewInt(0)
		}
	default:
		return nil, fmt.Errorf("Cannot convert %s to a BigInt", jsString(v))
	}
	if !n.IsInt64() {
		return nil, errDatabase // bigint out of range
	}
	return n.Int64(), nil
}

func coerceDate(v any) (any, error) {
	var ms float64
	n, isNum := jsNumber(v)
	switch {
	case isNum:
		ms = n
	default:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("is not a valid date: %s", jsString(v))
		}
		t, ok := parseDateString(s)
		if !ok {
			return nil, fmt.Errorf("is not a valid date: %s", s)
		}
		return t.Truncate(time.Millisecond), nil
	}
	if math.IsNaN(ms) || math.IsInf(ms, 0) || math.Abs(ms) > 8.64e15 {
		return nil, fmt.Errorf("is not a valid date: %s", jsString(v))
	}
	return time.UnixMilli(int64(math.Trunc(ms))).UTC(), nil
}

// jsString is JavaScript's String(v) for decoded JSON values.
func jsString(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			if e != nil {
				parts[i] = jsString(e)
			}
		}
		return strings.Join(parts, ",")
	case map[string]any:
		return "[object Object]"
	}
	return fmt.Sprint(v)
}

func jsTypeof(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case nil, map[string]any, []any:
		return "object"
	}
	return "undefined"
}

// jsNumber is JavaScript's Number(v); ok is false for NaN.
func jsNumber(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		return f, err == nil
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	case nil:
		return 0, true
	case string:
		s := strings.TrimSpace(x)
		if s == "" {
			return 0, true
		}
		if len(s) > 2 && s[0] == '0' && strings.ContainsRune("xXoObB", rune(s[1])) {
			i, err := strconv.ParseInt(s, 0, 64)
			return float64(i), err == nil
		}
		if strings.ContainsAny(s, "_xXpP") || strings.EqualFold(strings.TrimLeft(s, "+-"), "inf") ||
			strings.EqualFold(strings.TrimLeft(s, "+-"), "nan") {
			return 0, false
		}
		f, err := strconv.ParseFloat(s, 64)
		return f, err == nil
	case []any:
		switch len(x) {
		case 0:
			return 0, true
		case 1:
			return jsNumber(jsString(x[0]))
		}
	}
	return 0, false
}

// jsParseInt is JavaScript's parseInt(String(v), 10); ok is false for NaN.
func jsParseInt(v any) (int64, bool) {
	if n, ok := v.(json.Number); ok {
		if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
			return i, true
		}
		if f, err := strconv.ParseFloat(string(n), 64); err == nil && math.Abs(f) < 1e21 {
			return int64(math.Trunc(f)), true
		}
	}
	s := strings.TrimLeft(jsString(v), " \t\n\r\v\f")
	end := 0
	if end < len(s) && (s[end] == '-' || s[end] == '+') {
		end++
	}
	digits := end
	for end < len(s) && isDigit(s[end]) {
		end++
	}
	if end == digits {
		return 0, false
	}
	i, err := strconv.ParseInt(s[:end], 10, 64)
	if err != nil {
		return 0, false
	}
	return i, true
}

// jsTruthy is JavaScript truthiness of a decoded JSON value.
func jsTruthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		return err == nil && f != 0 && !math.IsNaN(f)
	}
	return true
}

// isoTime renders a time like JavaScript's Date.prototype.toJSON.
func isoTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// renderValue renders a stored value as v7 GET returns it.
func renderValue(f field, v any) any {
	if v == nil {
		return nil
	}
	switch f.kind {
	case kFK:
		return object{{"__id", v}}
	case kDate:
		return isoTime(v.(time.Time))
	case kBigInt:
		return strconv.FormatInt(v.(int64), 10) // Big Integer reads as a string in v7
	}
	return v
}

// object is a JSON object that keeps its key order.
type object []kv

type kv struct {
	k string
	v any
}

func (o object) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := marshal(e.k)
		b.Write(k)
		b.WriteByte(':')
		v, err := marshal(e.v)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}

// marshal is json.Marshal without HTML escaping, as JSON.stringify does.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func (o object) get(k string) (any, bool) {
	for _, e := range o {
		if e.k == k {
			return e.v, true
		}
	}
	return nil, false
}
