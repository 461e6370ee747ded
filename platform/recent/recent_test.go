package recent

import (
	"fmt"
	"sort"
	"testing"
)

func TestSetKeepsRunningAndNewestFinished(t *testing.T) {
	s := New[int](2)
	for i := 0; i < 5; i++ {
		if !s.Add(fmt.Sprint(i), i) {
			t.Fatalf("Add(%d) refused", i)
		}
	}
	if s.Add("3", 33) {
		t.Error("a taken id was accepted")
	}
	for _, id := range []string{"0", "1", "2"} {
		s.Finish(id)
	}
	var got []int
	for _, v := range s.All() {
		got = append(got, v)
	}
	sort.Ints(got)
	if fmt.Sprint(got) != "[1 2 3 4]" {
		t.Errorf("kept %v, want the running 3, 4 and the newest finished 1, 2", got)
	}
	if _, ok := s.Get("0"); ok {
		t.Error("the oldest finished value is still there")
	}
	if v, ok := s.Get("3"); !ok || v != 3 {
		t.Errorf("Get(3) = %v, %v", v, ok)
	}
}
