"""The app's state and logic without Gradio: the Explore session, the model holder, server folders, jobs."""
