"""A participant's way through a study, kept entirely on the server.

check -> consent -> instructions -> trials -> end (or declined). Opening the link stores
nothing: the screen check comes first, and the answer on the consent page creates the
participant (``identity``). Finishing the instructions assigns the participant's trials:
practice first, then one block per criterion (in a counterbalanced order) with the
main trials and the attention trials (gold trials with a broken image, repeats of an earlier
trial with the sides swapped) at random positions drawn from the participant's recorded
seed. The scheduler (``study.scheduling``) chooses the main tasks inside the assignment
transaction from the study's running counts (``study.tallies``): ``balanced`` fills the whole
list at once, ``active`` fills each main trial when it becomes current. Left/right is
counterbalanced per variant pair and criterion.

Every function here runs inside one write transaction of the caller. Locks, always in this
order: the participant row (``FOR NO KEY UPDATE`` on PostgreSQL, taken by the statement that
loads it; SQLite serialises writers at ``BEGIN IMMEDIATE``), then the study row when trials are
assigned or a participant stops counting, then tally rows. ``NO KEY`` locks serialise the
assigners without blocking the foreign-key checks of rows that merely reference the study (a
new participant), which ``FOR UPDATE`` would, and could deadlock on.

A request works on the participant's trials as loaded by one query (``rows.load_trials``) and
writes back only what it changes, so an answer costs a handful of statements however large
the study is.

The modules, each using only those above it:

- ``errors``: :class:`~study.flow.errors.FlowError`, a request the participant's state does
  not allow;
- ``rows``: the participant's row and their trial rows, as a request loads and changes them;
- ``identity``: who an arrival is, who may continue a session, the participant created at
  consent;
- ``study_lock``: the study row lock that serialises assigners, and timing out the late;
- ``planning``: which trials a participant gets, and which images fill them;
- ``lifecycle``: the screen check, consent (for those who arrived before it created them),
  instructions, finishing;
- ``trials``: the current trial (filled when it comes up), the next one, progress;
- ``answering``: an answer validated and stored with its attention or repeat check.
"""
