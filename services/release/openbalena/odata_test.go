package openbalena

import "testing"

func TestEncodeQuery(t *testing.T) {
	tests := []struct {
		name   string
		params []param
		want   string
	}{
		{"filter with quote and slash", []param{{"$filter", "slug eq " + quote("o'brien/app")}},
			"$filter=slug%20eq%20'o''brien%2Fapp'"},
		{"expand keeps parens", []param{{"$expand", "a($select=b;$expand=c)"}},
			"$expand=a(%24select%3Db%3B%24expand%3Dc)"},
		{"repeated scope", []param{{"scope", "repository:v2/ab:pull,push"}, {"scope", "repository:v2/cd:pull"}},
			"scope=repository%3Av2%2Fab%3Apull%2Cpush&scope=repository%3Av2%2Fcd%3Apull"},
		{"utf-8", []param{{"k", "é +"}}, "k=%C3%A9%20%2B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := encodeQuery(tt.params); got != tt.want {
				t.Errorf("encodeQuery = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestKeyString(t *testing.T) {
	if got, want := keyString("it's"), "'it''s'"; got != want {
		t.Errorf("keyString = %q, want %q", got, want)
	}
	if got, want := keyString("a b/c"), "'a%20b%2Fc'"; got != want {
		t.Errorf("keyString = %q, want %q", got, want)
	}
}

func TestCheckRepository(t *testing.T) {
	tests := []struct {
		repo string
		ok   bool
	}{
		{"v2/0123456789abcdef0123456789abcdef", true},
		{"v2/0123456789abcdef0123456789abcdef-1", true},
		{"org/app", true},
		{"registry2.example.com/v2/abc", false},
		{"127.0.0.1:5000/v2/abc", false},
		{"localhost/v2/abc", false},
		{"v2/abc:latest", false},
		{"v2/ABC", false},
		{"", false},
		{"v2/abc/", false},
	}
	for _, tt := range tests {
		if err := checkRepository(tt.repo); (err == nil) != tt.ok {
			t.Errorf("checkRepository(%q) = %v, want ok=%v", tt.repo, err, tt.ok)
		}
	}
}
