"""Models: the VLM adapter (``vlm``) and the teacher/student builders (``build``)."""
