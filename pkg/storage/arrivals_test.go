package storage

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
)

// TestArrivalsKeepTheLowest: whatever the order of arrivals, deletions,
// steps back and changes of membership, arrivals says what fleet.Lowest
// says of every member's barrier.
func TestArrivalsKeepTheLowest(t *testing.T) {
	t.Parallel()
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		n := 1 + rng.IntN(8)
		var ids []string
		for i := range n + 2 {
			ids = append(ids, fmt.Sprintf("s%d", i))
		}
		members := ids[:n] // the last two are not members at first
		a := newArrivals(members)
		reached := map[string]int{}
		for op := range 300 {
			id := ids[rng.IntN(len(ids))]
			switch c := rng.IntN(20); {
			case c == 0:
				delete(reached, id)
				a.set(id, 0)
			case c == 1:
				members = ids[rng.IntN(2) : n+rng.IntN(3)]
				a.setMembers(members)
			case c == 2:
				k := max(reached[id]-1-rng.IntN(2), 0) // back, as a rewritten status may
				reached[id] = k
				a.set(id, k)
			default:
				k := reached[id] + rng.IntN(2) // on, or the same again
				reached[id] = k
				a.set(id, k)
			}
			want := map[string]int{}
			for _, m := range members {
				if k, ok := reached[m]; ok {
					want[m] = k
				}
			}
			require.Equal(t, fleet.Lowest(members, want), a.lowest(), "seed %d, operation %d", seed, op)
		}
	}
}
