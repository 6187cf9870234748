package pgtest_test

import (
	"testing"

	"mailproxy/pgtest"
)

// TestStartGivesAClusterThatSurvivesRestarts checks the helpers' commands
// run; what a client sees is tested where clients are (tokens).
func TestStartGivesAClusterThatSurvivesRestarts(t *testing.T) {
	c := pgtest.Start(t, 0)
	if c.DSN == "" || c.Password == "" || c.Port == 0 {
		t.Fatalf("cluster: %+v", c)
	}
	c.NewDatabase(t)
	c.Restart(t)
	c.Down(t)
	c.Up(t)
	c.NewDatabase(t)
}
