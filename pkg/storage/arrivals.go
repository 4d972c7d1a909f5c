package storage

// arrivals is which barrier each member of a rollout has reached (see
// fleet.UpdateStatus.Reached), with the lowest of them, the barrier that
// every member has reached, kept at a constant cost per arrival: it counts
// the members at the lowest, and looks at every member again only when
// the last of those moves on, once per step, or when one goes back. A
// coordinator of 1000 servers takes in 1000 arrivals a step; asking every
// member on each would cost a million lookups a step.
type arrivals struct {
	members map[string]bool
	reached map[string]int
	// low is the lowest barrier reached; atLow counts the members there.
	low, atLow int
}

func newArrivals(members []string) *arrivals {
	a := &arrivals{reached: map[string]int{}}
	a.setMembers(members)
	return a
}

// setMembers makes members the servers whose arrivals count.
func (a *arrivals) setMembers(members []string) {
	a.members = make(map[string]bool, len(members))
	for _, id := range members {
		a.members[id] = true
	}
	a.rescan()
}

// reset forgets every arrival, for a state read anew.
func (a *arrivals) reset() {
	clear(a.reached)
	a.rescan()
}

// set records that server id has reached barrier k (0: none, or its status
// is gone); only members count for the lowest.
func (a *arrivals) set(id string, k int) {
	old := a.reached[id]
	if k == old {
		return
	}
	if k == 0 {
		delete(a.reached, id)
	} else {
		a.reached[id] = k
	}
	if !a.members[id] {
		return
	}
	switch {
	case k < a.low:
		a.rescan()
	case old == a.low:
		if a.atLow--; a.atLow == 0 {
			a.rescan()
		}
	case k == a.low:
		a.atLow++
	}
}

// lowest is the barrier that every member has reached; 0 without members.
func (a *arrivals) lowest() int { return a.low }

func (a *arrivals) rescan() {
	a.low, a.atLow = -1, 0
	for id := range a.members {
		switch r := a.reached[id]; {
		case a.low < 0 || r < a.low:
			a.low, a.atLow = r, 1
		case r == a.low:
			a.atLow++
		}
	}
	a.low = max(a.low, 0)
}
