"""Simulated participants with known preferences, for demos, load tests and checking the analysis.

- ``observer``: what a simulated participant answers (:class:`~study.simulate.observer.Preferences`,
  the known truth; :class:`~study.simulate.observer.Observer`, one participant);
- ``oracle``: which variant each image token shows (:class:`~study.simulate.oracle.StimulusOracle`).
  Participants cannot tell (blinding), so the simulator reads it from the study database;
  nothing a participant receives is used to learn a variant, and the simulator needs read
  access to the database for this;
- ``driver``: participants played through the real participant API of a running study server
  (:func:`~study.simulate.driver.run_simulation`, docs/study-api.md), one ``requests.Session``
  each, in threads.
"""
