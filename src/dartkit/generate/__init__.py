"""Generation backends behind one protocol (hf, openai, dummy) and the content-addressed cache."""
