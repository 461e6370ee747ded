package upload

import (
	"flag"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// A tar is at least 1.5 KB and Go's minimizer is quadratic in the length
	// of an input: at the default -test.fuzzminimizetime of 60s, a short
	// -fuzz run spends all its time minimizing the first new inputs.
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if !set {
		flag.Set("test.fuzzminimizetime", "2s")
	}
	os.Exit(m.Run())
}
