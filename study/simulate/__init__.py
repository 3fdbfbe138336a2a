"""Simulated participants with known preferences, for demos, load tests and checking the analysis.

- ``observer``: what a simulated participant answers: from a known Bradley-Terry model over
  the variants' names (:class:`~study.simulate.observer.Preferences`,
  :class:`~study.simulate.observer.Observer`), or from the pixels of the images it is shown,
  never their names (:class:`~study.simulate.observer.ImagePreferences` with an injected
  :class:`~study.simulate.observer.ImageJudge`, :class:`~study.simulate.observer.ImageAwareObserver`);
- ``oracle``: which variant each image token shows (:class:`~study.simulate.oracle.StimulusOracle`).
  Participants cannot tell (blinding), so the simulator reads it from the study database;
  nothing a participant receives is used to learn a variant, and the simulator needs read
  access to the database for this;
- ``driver``: participants played through the real participant API of a running study server
  (:func:`~study.simulate.driver.run_simulation`, docs/study-api.md), one ``requests.Session``
  each, in threads.
"""
