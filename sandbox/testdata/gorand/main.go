// Command gorand is a test guest built with Go: it answers with numbers
// from the Go runtime's random state (math/rand's top-level functions and
// a map's iteration order), so tests can tell whether two instances share
// that state.
package main

import (
	"math/rand"

	"github.com/talonhq/talon/sandbox/guest"
)

// atInit is drawn in _initialize: part of every instance's snapshot.
var atInit = rand.Uint64()

type result struct {
	AtInit uint64   `json:"at_init"`
	Rand   []uint64 `json:"rand"`
	Order  []int    `json:"order"`
}

func init() {
	guest.Run(func(struct{}) (result, error) {
		r := result{AtInit: atInit}
		for range 4 {
			r.Rand = append(r.Rand, rand.Uint64())
		}
		m := map[int]bool{}
		for i := range 16 {
			m[i] = true
		}
		for k := range m {
			r.Order = append(r.Order, k)
		}
		return r, nil
	})
}

func main() {}
