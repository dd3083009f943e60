"""The lecture, measured: experiments that train, measure and draw (``seqlab experiment …``),
attention maps (``seqlab attention``) and the HTML report (``seqlab report``)."""
