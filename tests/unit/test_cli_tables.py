"""Large tables print as plain aligned text (rich lays out 10,000 rows in seconds); small ones stay rich."""

from emulator.cli import common


def test_a_table_past_the_limit_prints_plain_with_every_row_and_no_markup(capsys):
    table = common.table_of("exp", "node", "state")
    for i in range(common.PLAIN_ROWS + 1):
        table.add_row(f"h{i}", "[green]running" if i % 2 else "[red]missing")
    common.emit([], "table", table)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "exp" and lines[1].split() == ["node", "state"]
    assert len(lines) == 2 + common.PLAIN_ROWS + 1  # every row, none cut
    assert lines[2].split() == ["h0", "missing"] and lines[3].split() == ["h1", "running"]
    assert "[" not in "".join(lines)
    assert len({line.index(line.split()[1]) for line in lines[1:]}) == 1  # the second column is aligned


def test_a_small_table_stays_rich(capsys):
    table = common.table_of("exp", "node", "state")
    table.add_row("h1", "[green]running")
    common.emit([], "table", table)
    printed = capsys.readouterr().out
    assert "running" in printed and any(ch in printed for ch in "┃│━─")  # drawn by rich
