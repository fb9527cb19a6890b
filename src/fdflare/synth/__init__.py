"""Synthetic full-disk magnetograms with a matching flare catalog, for demos, tests and benchmarks.

Nothing here is science. This package draws a toy Sun - bipolar active regions that emerge,
rotate differentially and decay, and flare at rates set by what the images show - and
writes it in the layout of prepared data, so that every later stage (``label``, ``train``,
``predict``, ``spatial``) runs on it unchanged and in minutes:

* ``images/YYYY/MM/DD/HMI.mYYYY.MM.DD_HH.MM.SS.png``: 8-bit line-of-sight magnetograms
  (128 = 0 G, +-1500 G at the ends with an ``asinh`` stretch so weak fields show, 0 outside
  the disk);
* ``geometry.csv``: observation time, disk centre and radius of every image;
* ``catalog.csv``: the flares in the study's schema ``start_time,goes_class,fl_lon,fl_lat``;
* ``regions.csv``: the active regions drawn (the ground truth behind the images);
* optionally ``jp2/``: the same Sun as 4096 x 4096 JPEG 2000 files with Helioviewer's XML
  header, the input of ``fdflare prepare``.

The model, in short:

* **Regions** emerge at a constant mean rate (Poisson per UTC day) at Spörer's-law
  latitudes (about 28 deg falling to 8 deg over each 11-year cycle, clipped to 4..38 deg),
  with log-normal peak flux (many small regions, few large ones), Hale's polarity law
  (northern leading polarity negative in even cycles, 5 % anti-Hale), Joy's-law tilt
  (leading polarity nearer the equator), growth over 1-4 days and exponential decay over
  days (small regions) to weeks (large ones), so that a handful to about ten regions are on
  the disk at a time. Each polarity is a compact spot plus a spreading plage, Gaussian on
  the sphere. Complex regions - rare among small ones, common among the largest - are
  drawn so that their complexity shows: compact, with more of their flux in spots, a delta
  spot of the following polarity pressed against the leading spot and a reversed bipole
  across the middle (intertwined polarities, strong inversion lines).
* **Rotation** follows Snodgrass (1983) for magnetic features,
  ``omega = 14.11 - 1.70 sin^2(lat) - 2.35 sin^4(lat)`` deg/day sidereal, less Earth's
  mean orbital rate for the synodic (Earth-seen) rate.
* **Rendering**: ``B_los = B_r * mu`` on the visible hemisphere, averaged over each pixel,
  white noise, optional B0 tilt of the observer; the disk radius follows the Earth-Sun
  distance of the date.
* **Flares** follow what the images show (:func:`flare_productivity`): a region of current
  unsigned flux ``PHI`` and complexity ``c`` flares about
  ``flare_rate * 1.2 * (PHI / 1e22 Mx)**2.5 * (1 + 3 c)`` times a day at C1.0 or above
  (levelling off at 20), with peak fluxes from a power law ``dN/dF ~ F**-2`` up to a largest flare that grows with
  ``PHI`` and ``c``, so big complex regions give most M and X flares and days with only
  small regions rarely have one. A flare behind the limb is seen by GOES attenuated by
  ``exp(-depth / 3 deg)`` (``depth`` = angle behind the limb), so regions up to about 10-15
  deg behind the limb (``|lon|`` up to ~100 deg) appear in the catalog although they cannot
  be seen in the images - a few per cent of the M and X flares.

The same seed always describes the same synthetic Sun: regions are drawn per UTC day and
flares per region from seeded streams, so any time window of a seed's history is the same
whatever ``start`` and ``end`` were, and the files are byte-identical run to run.
"""
