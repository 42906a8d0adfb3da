"""The control page: plain HTML, CSS and JavaScript, served by pushsource.ops.control."""
