package metadata

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// present returns the names among candidates that exist in r (a dangling
// link counts).
func present(r *os.Root, candidates ...string) []string {
	var found []string
	for _, name := range candidates {
		if _, err := r.Lstat(name); err == nil {
			found = append(found, name)
		}
	}
	return found
}

// readFile reads a regular file of at most max bytes; shown is the name
// for messages (relative to the project root). The messages never quote
// the content.
func readFile(r *os.Root, name, shown string, max int64) ([]byte, error) {
	f, err := r.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, userErr("%s: not found", shown)
		}
		return nil, userErr("%s: cannot be read: %v", shown, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", shown, err)
	}
	switch {
	case st.IsDir():
		return nil, userErr("%s: is a folder, not a file", shown)
	case !st.Mode().IsRegular():
		return nil, userErr("%s: is not a regular file", shown)
	case st.Size() > max:
		return nil, userErr("%s: is %s, over the %s limit", shown, size(st.Size()), size(max))
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", shown, err)
	}
	if int64(len(data)) > max {
		return nil, userErr("%s: is over the %s limit", shown, size(max))
	}
	return data, nil
}

// unwrapPath drops the *PathError wrapping (its path is ours, not the
// user's) and keeps the reason, e.g. "path escapes from parent".
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

// decode parses JSON (isJSON) or YAML into JSON-like values: maps with
// string keys (YAML scalar keys are turned into strings, as js-yaml does),
// []any, string, bool, nil, numbers (json.Number from JSON; int, uint64
// or float64 from YAML) and time.Time (YAML timestamps). An empty YAML
// document is nil. When quiet, syntax errors say only where they are, not
// what they saw (for files holding passwords).
func decode(data []byte, shown string, isJSON, quiet bool) (any, error) {
	var v any
	if isJSON {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return nil, jsonErr(data, shown, err, quiet)
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, userErr("%s: not valid JSON: unexpected data after the top-level value", shown)
		}
		return v, nil
	}
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, yamlErr(shown, err, quiet)
	}
	return normalize(v, "", shown)
}

func jsonErr(data []byte, shown string, err error, quiet bool) error {
	var se *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF):
		return userErr("%s: not valid JSON: the file is empty", shown)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return userErr("%s: not valid JSON: the file ends early", shown)
	case errors.As(err, &se):
		line, col := lineCol(data, se.Offset)
		if quiet {
			return userErr("%s: not valid JSON at line %d, column %d", shown, line, col)
		}
		return userErr("%s: not valid JSON at line %d, column %d: %v", shown, line, col, err)
	}
	return userErr("%s: not valid JSON", shown)
}

func lineCol(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(off) - (bytes.LastIndexByte(before, '\n') + 1)
	return line, col
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

func yamlErr(shown string, err error, quiet bool) error {
	if !quiet {
		return userErr("%s: not valid YAML: %s", shown, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		return userErr("%s: not valid YAML at line %s", shown, m[1])
	}
	return userErr("%s: not valid YAML", shown)
}

// normalize makes yaml.v3's output JSON-like; at is the key path.
func normalize(v any, at, shown string) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			n, err := normalize(e, join(at, k), shown)
			if err != nil {
				return nil, err
			}
			x[k] = n
		}
		return x, nil
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			var ks string
			switch kk := k.(type) {
			case nil:
				ks = "null"
			case string:
				ks = kk
			case bool, int, int64, uint64, float64:
				ks = fmt.Sprint(kk)
			default:
				return nil, userErr("%s: %s: a mapping key must be a plain value, not %s", shown, orTop(at), describe(k))
			}
			if _, dup := out[ks]; dup {
				return nil, userErr("%s: %s: key %q is defined twice", shown, orTop(at), ks)
			}
			n, err := normalize(e, join(at, ks), shown)
			if err != nil {
				return nil, err
			}
			out[ks] = n
		}
		return out, nil
	case []any:
		for i, e := range x {
			n, err := normalize(e, index(at, i), shown)
			if err != nil {
				return nil, err
			}
			x[i] = n
		}
		return x, nil
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return nil, userErr("%s: %s: %v is not a number JSON can hold", shown, orTop(at), x)
		}
	}
	return v, nil
}

// describe names a decoded value's type for messages, never its content.
func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case map[string]any, map[any]any:
		return "a mapping"
	case []any:
		return "a list"
	case time.Time:
		return "a timestamp"
	default:
		return "a number"
	}
}

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// join appends a mapping key to a key path: a.b, or a["x.y"].
func join(at, key string) string {
	if !plainKey.MatchString(key) {
		return at + "[" + strconv.Quote(key) + "]"
	}
	if at == "" {
		return key
	}
	return at + "." + key
}

func index(at string, i int) string { return fmt.Sprintf("%s[%d]", at, i) }

func orTop(at string) string {
	if at == "" {
		return "top level"
	}
	return at
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// isJSONName tells the format from the file name.
func isJSONName(name string) bool { return strings.HasSuffix(name, ".json") }
